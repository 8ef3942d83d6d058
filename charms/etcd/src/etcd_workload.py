"""The etcd workload: config, binaries, files, the etcd service and etcdctl, on one Host.

No ops import: everything takes a :class:`kaji.host.Host` and plain data, so the charm, the
workload tests and the benchmark drive the same code. Machine paths::

    /etc/kaji/etcd/etcd.conf.yml          etcd's config file (JSON, which is YAML)
    /etc/kaji/etcd/pki/ca.crt             the etcd CA certificate
    /etc/kaji/etcd/pki/member.{key,csr,crt}  this member's key, request and certificate
    /var/lib/kaji/etcd/data               the data directory (the unit's storage)
    /var/lib/kaji/etcd/member.json        the join record: this member's initial-* settings
    /var/lib/kaji/etcd/retired/<when>     data directories set aside (never deleted)
    /var/lib/kaji/etcd/snapshots/         snapshots taken by the ``snapshot`` action

A member's ``initial-*`` settings (the *join record*) are what it needs to make its data
directory: they are fixed until etcd has made it. etcd reads them only then (a member whose
data directory holds a WAL ignores them), so once the member has joined, :meth:`Member.settle`
rewrites them to a canonical form -- ``initial-cluster`` = the cluster's members, sorted;
``initial-cluster-state: existing`` -- whatever order the member joined in. Restarts follow a
digest of the config *without* those keys (``KAJI_CONFIG_DIGEST`` in the service's
environment), so rewriting them never restarts etcd while every other config change does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kaji.host import HostError, ServiceChange, ServiceSpec

if TYPE_CHECKING:
    from kaji.host import Host

SERVICE = "etcd"
CONF_DIR = "/etc/kaji/etcd"
PKI_DIR = f"{CONF_DIR}/pki"
CONFIG_FILE = f"{CONF_DIR}/etcd.conf.yml"
CA_FILE = f"{PKI_DIR}/ca.crt"
MEMBER_KEY_NAME = "member"
DATA_ROOT = "/var/lib/kaji/etcd"
DATA_DIR = f"{DATA_ROOT}/data"
JOIN_RECORD = f"{DATA_ROOT}/member.json"
RETIRED_DIR = f"{DATA_ROOT}/retired"
SNAPSHOT_DIR = f"{DATA_ROOT}/snapshots"
DEFAULT_MIRROR = "https://github.com/etcd-io/etcd/releases/download"
#: Config keys etcd reads only to make a new data directory (ignored once it holds a WAL).
BOOTSTRAP_KEYS = ("initial-cluster", "initial-cluster-state", "initial-cluster-token")
#: The service environment variable holding the digest of the config minus BOOTSTRAP_KEYS.
CONFIG_DIGEST_ENV = "KAJI_CONFIG_DIGEST"

_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)(i?)[Bb]?")
_DURATION = re.compile(r"(\d+)([smh]?)")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_QUOTA = 100 * 1024**3

logger = logging.getLogger(__name__)


def _shown(value: object) -> str:
    """A value as an error message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


class ConfigError(ValueError):
    """An invalid config option; ``option`` names it."""

    def __init__(self, option: str, reason: str) -> None:
        self.option = option
        self.reason = reason
        super().__init__(f"{option}: {reason}")


class EtcdError(Exception):
    """etcd or etcdctl did not do what was asked; the message says what and why."""


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EtcdConfig:
    """The validated charm configuration that shapes etcd."""

    version: str = "3.5.17"
    client_port: int = 2379
    peer_port: int = 2380
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    snapshot_count: int = 10000
    quota_backend_bytes: int = 2 * 1024**3
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "1h"
    mirror_url: str = DEFAULT_MIRROR
    sha256: str = ""


def parse_size(text: str) -> int:
    """Parse ``2GiB``, ``512M``, ``8G`` or a plain byte count; K/M/G/T are powers of 1024.

    Raises:
        ValueError: not a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{_shown(text)} is not a size (e.g. 2GiB, 512MiB, 8G)")
    number, unit, _ = match.groups()
    power = " KMGT".index(unit.upper()) if unit else 0
    return int(float(number) * 1024**power)


def _int_option(options: Mapping[str, object], name: str, low: int, high: int) -> int:
    value = options.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {_shown(value)}")
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _str_option(options: Mapping[str, object], name: str) -> str:
    value = options.get(name)
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {_shown(value)}")
    return value.strip()


def parse_config(options: Mapping[str, object]) -> EtcdConfig:
    """Validate every option at once (no side effects) and return the config.

    Raises:
        ConfigError: the first invalid option, named, with the reason.
    """
    version = _str_option(options, "version")
    if not _VERSION.fullmatch(version):
        raise ConfigError("version", f"must look like 3.5.17, got {_shown(version)}")
    client_port = _int_option(options, "client-port", 1, 65535)
    peer_port = _int_option(options, "peer-port", 1, 65535)
    if client_port == peer_port:
        raise ConfigError("peer-port", f"must differ from client-port ({client_port})")
    heartbeat = _int_option(options, "heartbeat-interval", 10, 10000)
    election = _int_option(options, "election-timeout", 50, 50000)
    if election < 5 * heartbeat:
        raise ConfigError(
            "election-timeout",
            f"must be at least 5x heartbeat-interval ({5 * heartbeat} ms), got {election} ms",
        )
    snapshot_count = _int_option(options, "snapshot-count", 1, 10**9)
    quota_text = _str_option(options, "quota-backend-bytes")
    try:
        quota = parse_size(quota_text)
    except ValueError as error:
        raise ConfigError("quota-backend-bytes", str(error)) from None
    if quota > _MAX_QUOTA:
        raise ConfigError("quota-backend-bytes", f"must be at most 100GiB, got {quota_text}")
    mode = _str_option(options, "auto-compaction-mode")
    if mode not in ("periodic", "revision"):
        raise ConfigError(
            "auto-compaction-mode", f"must be periodic or revision, got {_shown(mode)}"
        )
    retention = _str_option(options, "auto-compaction-retention")
    match = _DURATION.fullmatch(retention)
    if not match or (mode == "revision" and match.group(2)):
        expected = "a revision count" if mode == "revision" else "a duration like 1h or 30m"
        raise ConfigError(
            "auto-compaction-retention", f"must be {expected}, got {_shown(retention)}"
        )
    mirror = _str_option(options, "release-mirror").rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", mirror):
        raise ConfigError("release-mirror", f"must be an http(s) URL, got {_shown(mirror)}")
    sha256 = _str_option(options, "etcd-sha256").lower()
    if sha256 and not _SHA256.fullmatch(sha256):
        raise ConfigError("etcd-sha256", "must be empty or 64 hex digits")
    return EtcdConfig(
        version=version,
        client_port=client_port,
        peer_port=peer_port,
        heartbeat_interval=heartbeat,
        election_timeout=election,
        snapshot_count=snapshot_count,
        quota_backend_bytes=quota,
        auto_compaction_mode=mode,
        auto_compaction_retention=retention,
        mirror_url=mirror,
        sha256=sha256,
    )


# --- binaries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binaries:
    """Where etcd and etcdctl are (real paths), and whether etcd really runs here."""

    etcd: str
    etcdctl: str
    live: bool


def _arch() -> str:
    import platform

    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def release_url(config: EtcdConfig) -> str:
    """The upstream (or mirrored) release tarball for the configured version."""
    v = config.version
    return f"{config.mirror_url}/v{v}/etcd-v{v}-linux-{_arch()}.tar.gz"


def fetch_release_sha256(config: EtcdConfig, timeout: float = 30) -> str:
    """The tarball's SHA-256 from the ``SHA256SUMS`` file published beside it.

    Raises:
        EtcdError: the checksum file cannot be fetched or does not list the tarball.
    """
    from kaji.host import BinaryInstallError, fetch_text

    url = release_url(config)
    sums_url = url.rsplit("/", 1)[0] + "/SHA256SUMS"
    try:
        text = fetch_text(sums_url, timeout=timeout)  # through the model's proxies
    except BinaryInstallError as error:
        raise EtcdError(f"cannot fetch {sums_url}: {error}") from error
    wanted = url.rsplit("/", 1)[1]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == wanted and _SHA256.fullmatch(parts[0]):
            return parts[0]
    raise EtcdError(f"{sums_url} does not list {wanted}")


def ensure_binaries(host: Host, config: EtcdConfig, resource: str | None = None) -> Binaries:
    """Make etcd and etcdctl available and say where they are.

    Production: the attached resource tarball, else the release for ``config.version`` from
    ``config.mirror_url`` checked against ``config.sha256`` or the published SHA256SUMS.
    A sandbox Host downloads nothing: it uses etcd from PATH when there and the ProcessManager
    runs processes; otherwise etcd is only recorded (``live`` False).

    Raises:
        EtcdError, kaji.host.BinaryInstallError: the binaries cannot be installed.
    """
    if host.is_sandbox:
        return _sandbox_binaries(host)
    from kaji.host import install_binaries, installed_version

    files = ["etcd", "etcdctl"]
    current = host.path("/opt/kaji/etcd/current")
    if resource is not None:
        result = install_binaries(
            host, "etcd", config.version, files=files, source=resource, strip_components=1
        )
        current = result.current
    elif installed_version(host, "etcd") != config.version or not (current / "etcd").exists():
        sha256 = config.sha256 or fetch_release_sha256(config)
        install_binaries(
            host,
            "etcd",
            config.version,
            files=files,
            url=release_url(config),
            sha256=sha256,
            strip_components=1,
        )
    return Binaries(str(current / "etcd"), str(current / "etcdctl"), live=True)


def find_binaries(host: Host) -> Binaries:
    """The binaries already installed, installing nothing (for actions and leaving).

    Raises:
        EtcdError: etcd is not installed on this machine yet.
    """
    if host.is_sandbox:
        return _sandbox_binaries(host)
    current = host.path("/opt/kaji/etcd/current")
    if not (current / "etcd").exists() or not (current / "etcdctl").exists():
        raise EtcdError("etcd is not installed on this machine yet")
    return Binaries(str(current / "etcd"), str(current / "etcdctl"), live=True)


def _sandbox_binaries(host: Host) -> Binaries:
    """A sandbox downloads nothing: etcd from PATH when processes run, else only recorded."""
    etcd, etcdctl = shutil.which("etcd"), shutil.which("etcdctl")
    if etcd and etcdctl and host.services.runs_processes:
        return Binaries(etcd, etcdctl, live=True)
    placeholder = str(host.path("/opt/kaji/etcd/current"))
    return Binaries(f"{placeholder}/etcd", f"{placeholder}/etcdctl", live=False)


# --- membership data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberInfo:
    """One entry of etcd's member list."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def hex_id(self) -> str:
        """The ID as etcdctl prints and takes it."""
        return f"{self.id:x}"

    @property
    def started(self) -> bool:
        """Whether the member has started (an added member has no name until it does)."""
        return bool(self.name)


@dataclass(frozen=True)
class JoinRecord:
    """How this machine's data directory was made; fixes etcd's initial-* settings."""

    token: str
    initial_cluster: str
    state: str
    member_id: str | None = None

    def to_json(self) -> str:
        """Deterministic JSON for the record file."""
        return json.dumps(
            {
                "token": self.token,
                "initial-cluster": self.initial_cluster,
                "state": self.state,
                "member-id": self.member_id,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class SnapshotInfo:
    """A saved, verified snapshot."""

    path: str
    size: int
    sha256: str
    revision: int
    total_keys: int


def removal_blocker(
    members: Sequence[MemberInfo], healthy_ids: Iterable[int], member_id: int
) -> str | None:
    """Why removing ``member_id`` would lose quorum, or None when it is safe.

    Learners do not vote and are not counted. Members already unhealthy count against quorum:
    after the removal, the healthy voters left must be a majority of the voters left.
    """
    voters = [m for m in members if not m.is_learner]
    target = next((m for m in members if m.id == member_id), None)
    if target is None or target.is_learner:
        return None
    healthy = {m.id for m in voters} & set(healthy_ids)
    remaining = len(voters) - 1
    if remaining == 0:
        return f"{target.name or target.hex_id} is the last member"
    healthy_left = len(healthy - {member_id})
    quorum = remaining // 2 + 1
    if healthy_left < quorum:
        return (
            f"removing {target.name or target.hex_id} would leave {healthy_left} healthy of "
            f"{remaining} voting members (quorum {quorum})"
        )
    return None


# --- one member on one machine ------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """This machine's etcd member: its name, addresses, config and binaries."""

    host: Host
    config: EtcdConfig
    binaries: Binaries
    name: str
    address: str
    extra_listen: tuple[str, ...] = field(default_factory=tuple)
    #: Where etcd listens: the machine's bind address (default: ``address``). ``address`` is
    #: the ingress address other units reach it at, which etcd advertises; behind NAT or
    #: with spaces the two differ.
    listen_address: str | None = None

    @property
    def client_url(self) -> str:
        """The URL clients reach this member at."""
        return f"https://{_url_host(self.address)}:{self.config.client_port}"

    @property
    def peer_url(self) -> str:
        """The URL other members reach this member at."""
        return f"https://{_url_host(self.address)}:{self.config.peer_port}"

    def path(self, machine_path: str) -> str:
        """The real path of a machine path on this member's host."""
        return str(self.host.path(machine_path))

    # -- files -------------------------------------------------------------------------------

    def install_certificates(self, ca_cert: str, member_cert: str) -> bool:
        """Write the CA and this member's certificate (the key is already there)."""
        changed = self.host.write_file(CA_FILE, ca_cert, mode=0o644)
        changed |= self.host.write_file(f"{PKI_DIR}/{MEMBER_KEY_NAME}.crt", member_cert)
        return changed

    def has_certificates(self) -> bool:
        """Whether the CA, key and certificate files are all in place."""
        names = (CA_FILE, *(f"{PKI_DIR}/{MEMBER_KEY_NAME}.{s}" for s in ("key", "crt")))
        return all(self.host.exists(n) for n in names)

    def join_record(self) -> JoinRecord | None:
        """The record of how the data directory was made, or None when there is none."""
        text = self.host.read_text(JOIN_RECORD)
        if text is None:
            return None
        try:
            data = json.loads(text)
            return JoinRecord(
                token=str(data["token"]),
                initial_cluster=str(data["initial-cluster"]),
                state=str(data["state"]),
                member_id=data.get("member-id"),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def write_join_record(self, record: JoinRecord) -> None:
        """Record how the data directory is being made (before etcd first starts)."""
        self.host.ensure_directory(DATA_ROOT, 0o700)
        self.host.write_file(JOIN_RECORD, record.to_json(), mode=0o600)

    def has_data(self) -> bool:
        """Whether the data directory holds a member's data."""
        return self.host.exists(f"{DATA_DIR}/member")

    def is_initialized(self) -> bool:
        """Whether etcd has made this member's WAL; from then on it ignores ``initial-*``.

        The same test etcd makes (``member/wal`` holds a ``.wal`` file) before it decides
        whether to read the bootstrap settings.
        """
        try:
            names = os.listdir(self.host.path(f"{DATA_DIR}/member/wal"))
        except OSError:
            return False
        return any(name.endswith(".wal") for name in names)

    def settle(self, members: Mapping[str, str]) -> JoinRecord | None:
        """Rewrite the join record and config to the canonical form; never restarts etcd.

        Canonical: ``initial-cluster`` = ``members`` (name -> peer URL, the cluster's members
        now) sorted, state ``existing``, the record's token and member ID. Only once the member
        has joined: its WAL exists (live), or its recorded service was started (etcd only
        recorded), and ``members`` names it. Returns the record now in force, or None when the
        member has not joined yet (nothing is written then).
        """
        record = self.join_record()
        if record is None or self.name not in members:
            return None
        joined = self.is_initialized() if self.binaries.live else self.is_running()
        if not joined:
            return None
        settled = replace(record, initial_cluster=initial_cluster(members), state="existing")
        if settled != record:
            self.write_join_record(settled)
        if self.host.exists(CONFIG_FILE):
            self.host.write_file(CONFIG_FILE, self.render_config(settled), mode=0o600)
        return settled

    def retire_data(self, reason: str) -> str | None:
        """Stop etcd and set the data directory aside (kept, never deleted); forget the record.

        Returns the machine path it was moved to, or None when there was none.
        """
        self.host.services.stop(SERVICE)
        self.host.remove_file(JOIN_RECORD)
        if not self.host.exists(DATA_DIR):
            return None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.host.ensure_directory(RETIRED_DIR, 0o700)
        target = f"{RETIRED_DIR}/{stamp}-{re.sub(r'[^a-z0-9-]', '-', reason.lower())[:40]}"
        n = 0
        while self.host.exists(target + (f".{n}" if n else "")):
            n += 1
        target += f".{n}" if n else ""
        os.rename(self.host.path(DATA_DIR), self.host.path(target))
        return target

    def runtime_settings(self, *, machine_paths: bool = False) -> dict[str, object]:
        """Every etcd setting except the bootstrap-only ``initial-cluster*`` keys.

        Paths are real paths (what etcd is given), or machine paths with ``machine_paths``
        (the same on every sandbox root: what the restart digest is computed from).
        """
        c = self.config
        where = (lambda p: p) if machine_paths else self.path
        listen = _url_host(self.listen_address or self.address)
        extra = (f"https://{_url_host(a)}:{c.client_port}" for a in self.extra_listen)
        listen_clients = sorted({f"https://{listen}:{c.client_port}", *extra})

        def tls() -> dict[str, object]:
            return {
                "cert-file": where(f"{PKI_DIR}/{MEMBER_KEY_NAME}.crt"),
                "key-file": where(f"{PKI_DIR}/{MEMBER_KEY_NAME}.key"),
                "trusted-ca-file": where(CA_FILE),
                "client-cert-auth": True,
                "auto-tls": False,
            }

        return {
            "name": self.name,
            "data-dir": where(DATA_DIR),
            "listen-client-urls": ",".join(listen_clients),
            "advertise-client-urls": self.client_url,
            "listen-peer-urls": f"https://{listen}:{c.peer_port}",
            "initial-advertise-peer-urls": self.peer_url,
            "heartbeat-interval": c.heartbeat_interval,
            "election-timeout": c.election_timeout,
            "snapshot-count": c.snapshot_count,
            "quota-backend-bytes": c.quota_backend_bytes,
            "auto-compaction-mode": c.auto_compaction_mode,
            "auto-compaction-retention": c.auto_compaction_retention,
            "client-transport-security": tls(),
            "peer-transport-security": tls(),
            "strict-reconfig-check": True,
            "logger": "zap",
            "log-outputs": ["stderr"],
        }

    def render_config(self, record: JoinRecord) -> str:
        """The config file of this member's etcd (deterministic JSON)."""
        bootstrap = (record.initial_cluster, record.state, record.token)
        settings = {**self.runtime_settings(), **dict(zip(BOOTSTRAP_KEYS, bootstrap, strict=True))}
        return json.dumps(settings, indent=1, sort_keys=True) + "\n"

    def config_digest(self) -> str:
        """SHA-256 of the config without the bootstrap keys: a change means etcd must restart."""
        import hashlib

        text = json.dumps(self.runtime_settings(machine_paths=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def service_spec(self) -> ServiceSpec:
        """The etcd service; restarts follow the config digest and the certificates.

        The config file itself is not watched: a change of only its bootstrap keys (which etcd
        ignores once initialised) must not restart etcd; every other change alters the digest.
        """
        environment = {CONFIG_DIGEST_ENV: self.config_digest()}
        if _arch() != "amd64":
            environment["ETCD_UNSUPPORTED_ARCH"] = _arch()
        return ServiceSpec(
            SERVICE,
            [self.binaries.etcd, f"--config-file={self.path(CONFIG_FILE)}"],
            environment=environment,
            description="etcd (kaji)",
            after=["network-online.target"],
            wants=["network-online.target"],
            restart="always",
            type="notify" if not self.host.is_sandbox else "simple",
            limit_nofile=65536,
            watched_files=[
                self.path(CA_FILE),
                self.path(f"{PKI_DIR}/{MEMBER_KEY_NAME}.crt"),
            ],
        )

    def ensure_running(self, record: JoinRecord) -> ServiceChange:
        """Write the config and start etcd, or restart it if config or certificates changed."""
        self.host.ensure_directory(DATA_ROOT, 0o700)
        self.host.ensure_directory(DATA_DIR, 0o700)
        self.host.ensure_directory(CONF_DIR, 0o755)
        self.host.write_file(CONFIG_FILE, self.render_config(record), mode=0o600)
        return self.host.services.ensure(self.service_spec())

    def is_running(self) -> bool:
        """Whether the etcd service runs (or is recorded as running)."""
        return self.host.services.is_running(SERVICE)

    def stop(self) -> bool:
        """Stop etcd; return whether it was running."""
        return self.host.services.stop(SERVICE)

    # -- etcdctl -----------------------------------------------------------------------------

    def etcdctl(
        self,
        *args: str,
        endpoints: Sequence[str] | None = None,
        timeout: float = 30,
        check: bool = True,
    ) -> str:
        """Run etcdctl with this member's certificate against ``endpoints`` (default: own).

        Raises:
            EtcdError: etcdctl failed (with ``check``) or etcd is only recorded here.
        """
        if not self.binaries.live:
            raise EtcdError("etcd is not running on this machine (recorded only)")
        argv = [
            self.binaries.etcdctl,
            f"--endpoints={','.join(endpoints or [self.client_url])}",
            f"--cacert={self.path(CA_FILE)}",
            f"--cert={self.path(f'{PKI_DIR}/{MEMBER_KEY_NAME}.crt')}",
            f"--key={self.path(f'{PKI_DIR}/{MEMBER_KEY_NAME}.key')}",
            "--dial-timeout=2s",
            "--command-timeout=10s",
            *args,
        ]
        started = time.monotonic()
        try:
            result = self.host.run(argv, timeout=timeout, env={"ETCDCTL_API": "3"}, check=check)
        except HostError as error:
            raise EtcdError(str(error)) from error
        finally:
            logger.debug("etcdctl %s: %.2fs", " ".join(args[:2]), time.monotonic() - started)
        return result.stdout

    def member_list(self, endpoints: Sequence[str] | None = None) -> list[MemberInfo]:
        """The cluster's members, asked through ``endpoints``.

        Raises:
            EtcdError: no endpoint answered.
        """
        data = _json(self.etcdctl("member", "list", "-w", "json", endpoints=endpoints))
        return [_member_info(m) for m in data.get("members", [])]

    def reconfigure(
        self, *args: str, endpoints: Sequence[str] | None = None, wait: float = 15
    ) -> str:
        """Run a membership change, retrying while etcd calls the cluster unhealthy.

        With strict reconfig checking (on), etcd refuses membership changes until every voting
        member has been connected for 5 seconds ("unhealthy cluster"), e.g. right after a
        promotion; that is retried for up to ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                return self.etcdctl(*args, endpoints=endpoints)
            except EtcdError as error:
                if "unhealthy cluster" not in str(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def add_learner(
        self, name: str, peer_url: str, endpoints: Sequence[str] | None = None
    ) -> list[MemberInfo]:
        """Add a member as a learner; return the new member list (the new one unstarted)."""
        out = self.reconfigure(
            "member", "add", name, "--learner", f"--peer-urls={peer_url}", "-w", "json",
            endpoints=endpoints,
        )  # fmt: skip
        return [_member_info(m) for m in _json(out).get("members", [])]

    def promote(self, member_id: int, endpoints: Sequence[str] | None = None) -> None:
        """Promote a learner to a voting member (fails while it has not caught up)."""
        self.etcdctl("member", "promote", f"{member_id:x}", endpoints=endpoints)

    def remove_member(self, member_id: int, endpoints: Sequence[str] | None = None) -> None:
        """Remove a member from the cluster (no quorum check: see ``remove_safely``)."""
        self.reconfigure("member", "remove", f"{member_id:x}", endpoints=endpoints)

    def endpoint_health(self, endpoints: Sequence[str]) -> dict[str, bool]:
        """Health (a quorum read answered) of each client URL."""
        if not endpoints:
            return {}
        out = self.etcdctl(
            "endpoint", "health", "-w", "json", endpoints=endpoints, check=False, timeout=30
        )
        health = dict.fromkeys(endpoints, False)
        try:
            entries = json.loads(out) if out.strip() else []
        except ValueError:
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("endpoint") in health:
                health[entry["endpoint"]] = bool(entry.get("health"))
        return health

    def endpoint_status(self, endpoints: Sequence[str]) -> list[dict[str, object]]:
        """``etcdctl endpoint status`` of each reachable endpoint (raft leader, revision...)."""
        out = self.etcdctl("endpoint", "status", "-w", "json", endpoints=endpoints, check=False)
        try:
            entries = json.loads(out) if out.strip() else []
        except ValueError:
            return []
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def own_id(self) -> int | None:
        """This member's ID as its own endpoint reports it, or None when it does not answer."""
        for entry in self.endpoint_status([self.client_url]):
            status = entry.get("Status")
            if isinstance(status, dict):
                header = status.get("header")
                if isinstance(header, dict) and isinstance(header.get("member_id"), int):
                    return int(header["member_id"])
        return None

    def leader_id(self, endpoints: Sequence[str]) -> int | None:
        """The raft leader's member ID as the first answering endpoint reports it."""
        for entry in self.endpoint_status(endpoints):
            status = entry.get("Status")
            if isinstance(status, dict) and isinstance(status.get("leader"), int):
                return int(status["leader"])
        return None

    # -- membership procedures -------------------------------------------------------------

    def bootstrap(self, token: str) -> JoinRecord:
        """Start a new one-member cluster on this machine (idempotent once started)."""
        record = self.join_record() or JoinRecord(
            token=token, initial_cluster=f"{self.name}={self.peer_url}", state="new"
        )
        self.write_join_record(record)
        self.ensure_running(record)
        return record

    def start_joining(self, token: str, members: Mapping[str, str]) -> JoinRecord:
        """Start etcd as an already-added member of the cluster ``members`` (name -> peer URL)."""
        cluster = dict(members)
        cluster[self.name] = self.peer_url
        record = self.join_record() or JoinRecord(
            token=token, initial_cluster=initial_cluster(cluster), state="existing"
        )
        self.write_join_record(record)
        self.ensure_running(record)
        return record

    def promote_self(self, endpoints: Sequence[str], wait: float = 30) -> bool:
        """Promote this member once it has caught up; True when it is a voting member.

        Tries for up to ``wait`` seconds; False when it is still a learner after that.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                members = self.member_list(endpoints)
                me = next((m for m in members if self.peer_url in m.peer_urls), None)
                if me is None:
                    return False
                if not me.is_learner:
                    return True
                if me.started:
                    self.promote(me.id, endpoints)
                    return True
            except EtcdError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.3)

    def remove_safely(self, member_id: int, endpoints: Sequence[str]) -> str | None:
        """Remove a member unless that would lose quorum; return the reason when refused.

        Raises:
            EtcdError: etcd could not be asked or refused the change.
        """
        members = self.member_list(endpoints)
        target = next((m for m in members if m.id == member_id), None)
        if target is None:
            return None
        urls = [u for m in members if not m.is_learner for u in m.client_urls[:1]]
        health = self.endpoint_health(urls)
        healthy = [m.id for m in members if m.client_urls and health.get(m.client_urls[0])]
        if blocker := removal_blocker(members, healthy, member_id):
            return blocker
        self.remove_member(member_id, endpoints)
        return None

    # -- backup ----------------------------------------------------------------------------

    def snapshot(self, path: str | None = None) -> SnapshotInfo:
        """Save a snapshot from this member (machine path), verify it and describe it."""
        import hashlib

        if path is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path = f"{SNAPSHOT_DIR}/etcd-{self.name}-{stamp}.db"
        self.host.ensure_directory(path.rsplit("/", 1)[0] or "/", 0o700)
        real = self.path(path)
        self.etcdctl("snapshot", "save", real, timeout=300)
        status = self.snapshot_status(real)
        data = self.host.read_bytes(path) or b""
        return SnapshotInfo(
            path=path,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            revision=int(status.get("revision", 0)),
            total_keys=int(status.get("totalKey", 0)),
        )

    def snapshot_status(self, real_path: str) -> dict[str, int]:
        """Verify a snapshot file (etcdctl checks its hash); return hash, revision, keys, size.

        Raises:
            EtcdError: the file is not a valid snapshot.
        """
        if not self.binaries.live:
            raise EtcdError("etcd is not running on this machine (recorded only)")
        try:
            result = self.host.run(
                [self.binaries.etcdctl, "snapshot", "status", real_path, "-w", "json"],
                env={"ETCDCTL_API": "3"},
                timeout=120,
            )
        except HostError as error:
            raise EtcdError(f"not a valid snapshot: {error}") from error
        data = _json(result.stdout)
        return {k: int(v) for k, v in data.items() if isinstance(v, int)}

    def restore(self, snapshot_real_path: str, token: str) -> JoinRecord:
        """Rebuild this machine as a new one-member cluster from a snapshot.

        The current data directory is set aside (kept). Other machines must rejoin.

        Raises:
            EtcdError: the snapshot is invalid or the restore failed (the old data is put back
                where it was when the restore itself fails).
        """
        self.snapshot_status(snapshot_real_path)
        self.stop()
        staging = f"{DATA_ROOT}/restore-staging"
        if self.host.exists(staging):
            shutil.rmtree(self.host.path(staging))
        cluster = f"{self.name}={self.peer_url}"
        try:
            self.host.run(
                [
                    self.binaries.etcdctl, "snapshot", "restore", snapshot_real_path,
                    f"--name={self.name}", f"--initial-cluster={cluster}",
                    f"--initial-cluster-token={token}",
                    f"--initial-advertise-peer-urls={self.peer_url}",
                    f"--data-dir={self.path(staging)}",
                ],
                env={"ETCDCTL_API": "3"},
                timeout=600,
            )  # fmt: skip
        except HostError as error:
            if self.host.exists(staging):
                shutil.rmtree(self.host.path(staging))
            raise EtcdError(f"snapshot restore failed: {error}") from error
        self.retire_data("before-restore")
        self.host.ensure_directory(DATA_ROOT, 0o700)
        os.rename(self.host.path(staging), self.host.path(DATA_DIR))
        os.chmod(self.host.path(DATA_DIR), 0o700)
        record = JoinRecord(token=token, initial_cluster=cluster, state="existing")
        self.write_join_record(record)
        self.ensure_running(record)
        return record

    def defrag(self, endpoints: Sequence[str] | None = None) -> str:
        """Defragment the given members' backends (default: this one)."""
        return self.etcdctl("defrag", endpoints=endpoints, timeout=300).strip()

    def wait_healthy(self, endpoints: Sequence[str] | None = None, timeout: float = 30) -> bool:
        """Wait until every endpoint (default: own) is healthy; False after ``timeout``."""
        wanted = list(endpoints or [self.client_url])
        deadline = time.monotonic() + timeout
        while True:
            if all(self.endpoint_health(wanted).values()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def grow(existing: Member, new: Member, token: str, wait: float = 60) -> list[MemberInfo]:
    """Add ``new`` to the cluster ``existing`` belongs to, as the charm does across two units.

    The leader's part (``member add --learner``) runs through ``existing``; the new unit's part
    (start with ``initial-cluster-state=existing``, catch up, promote) through ``new``.

    Raises:
        EtcdError: the member could not be added or was not promoted within ``wait`` seconds.
    """
    endpoints = [u for m in existing.member_list() for u in m.client_urls]
    listed = existing.add_learner(new.name, new.peer_url, endpoints)
    members = {m.name: m.peer_urls[0] for m in listed if m.name and m.peer_urls}
    new.start_joining(token, members)
    if not new.promote_self(endpoints, wait=wait):
        raise EtcdError(f"{new.name} did not catch up within {wait:g}s")
    record = new.join_record()
    own = new.own_id()
    if record is not None and own is not None:
        new.write_join_record(with_member_id(record, f"{own:x}"))
    return existing.member_list([*endpoints, new.client_url])


def initial_cluster(members: Mapping[str, str]) -> str:
    """``--initial-cluster`` for ``members`` (name -> peer URL): ``name=url`` pairs, sorted."""
    return ",".join(f"{name}={url}" for name, url in sorted(members.items()))


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise EtcdError(f"etcdctl printed no JSON: {text[:200]!r}") from error
    if not isinstance(data, dict):
        raise EtcdError(f"etcdctl printed unexpected JSON: {text[:200]!r}")
    return data


def _member_info(raw: object) -> MemberInfo:
    if not isinstance(raw, dict):
        raise EtcdError(f"unexpected member entry: {raw!r}")
    return MemberInfo(
        id=int(raw.get("ID", 0)),
        name=str(raw.get("name", "")),
        peer_urls=tuple(str(u) for u in raw.get("peerURLs") or ()),
        client_urls=tuple(str(u) for u in raw.get("clientURLs") or ()),
        is_learner=bool(raw.get("isLearner", False)),
    )


def with_member_id(record: JoinRecord, member_id: str) -> JoinRecord:
    """The record with the member ID filled in."""
    return replace(record, member_id=member_id)


__all__ = [
    "BOOTSTRAP_KEYS",
    "CONFIG_DIGEST_ENV",
    "ConfigError",
    "EtcdConfig",
    "EtcdError",
    "JoinRecord",
    "Member",
    "MemberInfo",
    "SnapshotInfo",
    "ensure_binaries",
    "find_binaries",
    "grow",
    "initial_cluster",
    "parse_config",
    "parse_size",
    "removal_blocker",
]

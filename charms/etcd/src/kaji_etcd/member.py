"""This machine's etcd member: its files, its service and etcdctl, on one Host (no ops import).

Everything takes a :class:`kaji.host.Host` and plain data, so the charm, the workload tests and
the benchmark drive the same code; the paths are in :mod:`kaji_etcd.literals`.

A member's ``initial-*`` settings (the *join record*) are what it needs to make its data
directory: they are fixed until etcd has made it. etcd reads them only then (a member whose
data directory holds a WAL ignores them), so once the member has joined, :meth:`Member.settle`
rewrites them to a canonical form -- ``initial-cluster`` = the cluster's members, sorted;
``initial-cluster-state: existing`` -- whatever order the member joined in. Restarts follow a
digest of the config *without* those keys (``KAJI_CONFIG_DIGEST`` in the service's
environment), so rewriting them never restarts etcd while every other config change does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kaji.host import HostError, ServiceChange, ServiceSpec
from kaji.interfaces.etcd_peers import member_name_for
from kaji_etcd import EtcdError, binaries
from kaji_etcd.literals import (
    BOOTSTRAP_KEYS,
    CA_FILE,
    CONF_DIR,
    CONFIG_DIGEST_ENV,
    CONFIG_FILE,
    DATA_DIR,
    DATA_ROOT,
    JOIN_RECORD,
    MEMBER_CERT_FILE,
    MEMBER_KEY_FILE,
    RESTORE_STAGING,
    RETIRED_DIR,
    SERVICE,
    SNAPSHOT_DIR,
)
from kaji_etcd.membership import MemberInfo, initial_cluster, removal_blocker

if TYPE_CHECKING:
    from kaji.host import Host
    from kaji_etcd.binaries import Binaries
    from kaji_etcd.config import EtcdConfig

__all__ = ["EtcdError", "JoinRecord", "Member", "SnapshotInfo"]

logger = logging.getLogger(__name__)


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

    def with_member_id(self, member_id: str) -> JoinRecord:
        """The record with the member ID filled in."""
        return replace(self, member_id=member_id)


@dataclass(frozen=True)
class SnapshotInfo:
    """A saved, verified snapshot."""

    path: str
    size: int
    sha256: str
    revision: int
    total_keys: int


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

    @classmethod
    def of_unit(
        cls,
        host: Host,
        config: EtcdConfig,
        unit: str,
        address: str,
        bind_address: str | None,
        *,
        install: bool,
        resource: str | None = None,
    ) -> Member:
        """Unit ``unit``'s member, advertising ``address`` and listening on ``bind_address``.

        ``install`` makes the binaries available (``resource``: the attached tarball);
        without it, the ones already on the machine are used.

        Raises:
            EtcdError, kaji.host.HostError: the binaries cannot be installed or are not there.
        """
        if install:
            found = binaries.ensure_binaries(host, config, resource)
        else:
            found = binaries.find_binaries(host)
        extra = ("127.0.0.1",) if not host.is_sandbox and address != "127.0.0.1" else ()
        name = member_name_for(unit)
        return cls(host, config, found, name, address, extra, bind_address or address)

    def path(self, machine_path: str) -> str:
        """The real path of a machine path on this member's host."""
        return str(self.host.path(machine_path))

    # -- files -------------------------------------------------------------------------------

    def install_certificates(self, ca_cert: str, member_cert: str) -> bool:
        """Write the CA and this member's certificate (the key is already there)."""
        changed = self.host.write_file(CA_FILE, ca_cert, mode=0o644)
        changed |= self.host.write_file(MEMBER_CERT_FILE, member_cert)
        return changed

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
                "cert-file": where(MEMBER_CERT_FILE),
                "key-file": where(MEMBER_KEY_FILE),
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
        text = json.dumps(self.runtime_settings(machine_paths=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def service_spec(self) -> ServiceSpec:
        """The etcd service; restarts follow the config digest and the certificates.

        The config file itself is not watched: a change of only its bootstrap keys (which etcd
        ignores once initialised) must not restart etcd; every other change alters the digest.
        """
        environment = {CONFIG_DIGEST_ENV: self.config_digest()}
        if binaries.arch() != "amd64":
            environment["ETCD_UNSUPPORTED_ARCH"] = binaries.arch()
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
                self.path(MEMBER_CERT_FILE),
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
            f"--cert={self.path(MEMBER_CERT_FILE)}",
            f"--key={self.path(MEMBER_KEY_FILE)}",
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
        staging = RESTORE_STAGING
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

"""etcd and etcdctl on this machine: installed from a resource or a release (no ops import)."""

from __future__ import annotations

import platform
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kaji.host import BinaryInstallError, fetch_text, install_binaries, installed_version
from kaji_etcd import EtcdError
from kaji_etcd.literals import CURRENT_DIR, INSTALL_NAME, SHA256_HEX

if TYPE_CHECKING:
    from kaji.host import Host
    from kaji_etcd.config import EtcdConfig

__all__ = [
    "Binaries",
    "arch",
    "ensure_binaries",
    "etcd_on_path",
    "fetch_release_sha256",
    "find_binaries",
    "release_url",
]

_FILES = ["etcd", "etcdctl"]


@dataclass(frozen=True)
class Binaries:
    """Where etcd and etcdctl are (real paths), and whether etcd really runs here."""

    etcd: str
    etcdctl: str
    live: bool


def arch() -> str:
    """This machine's architecture as etcd's release names spell it."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def etcd_on_path() -> bool:
    """Whether etcd and etcdctl are on PATH (a sandbox runs those)."""
    return bool(shutil.which("etcd") and shutil.which("etcdctl"))


def release_url(config: EtcdConfig) -> str:
    """The upstream (or mirrored) release tarball for the configured version."""
    v = config.version
    return f"{config.mirror_url}/v{v}/etcd-v{v}-linux-{arch()}.tar.gz"


def fetch_release_sha256(config: EtcdConfig, timeout: float = 30) -> str:
    """The tarball's SHA-256 from the ``SHA256SUMS`` file published beside it.

    Raises:
        EtcdError: the checksum file cannot be fetched or does not list the tarball.
    """
    url = release_url(config)
    sums_url = url.rsplit("/", 1)[0] + "/SHA256SUMS"
    try:
        text = fetch_text(sums_url, timeout=timeout)  # through the model's proxies
    except BinaryInstallError as error:
        raise EtcdError(f"cannot fetch {sums_url}: {error}") from error
    wanted = url.rsplit("/", 1)[1]
    for line in text.splitlines():
        parts = line.split()
        if (
            len(parts) == 2
            and parts[1].lstrip("*") == wanted
            and re.fullmatch(SHA256_HEX, parts[0])
        ):
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
    current = host.path(CURRENT_DIR)
    if resource is not None:
        result = install_binaries(
            host, INSTALL_NAME, config.version, files=_FILES, source=resource, strip_components=1
        )
        current = result.current
    elif (
        installed_version(host, INSTALL_NAME) != config.version or not (current / "etcd").exists()
    ):
        sha256 = config.sha256 or fetch_release_sha256(config)
        install_binaries(
            host,
            INSTALL_NAME,
            config.version,
            files=_FILES,
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
    current = host.path(CURRENT_DIR)
    if not (current / "etcd").exists() or not (current / "etcdctl").exists():
        raise EtcdError("etcd is not installed on this machine yet")
    return Binaries(str(current / "etcd"), str(current / "etcdctl"), live=True)


def _sandbox_binaries(host: Host) -> Binaries:
    """A sandbox downloads nothing: etcd from PATH when processes run, else only recorded."""
    etcd, etcdctl = shutil.which("etcd"), shutil.which("etcdctl")
    if etcd and etcdctl and host.services.runs_processes:
        return Binaries(etcd, etcdctl, live=True)
    placeholder = str(host.path(CURRENT_DIR))
    return Binaries(f"{placeholder}/etcd", f"{placeholder}/etcdctl", live=False)

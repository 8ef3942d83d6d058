"""The Kubernetes server binaries: found on PATH (sandbox) or installed from the release.

No ops here: the charm passes the attached resource's path, if any.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kaji import kubernetes as k8s
from kaji.host import (
    BinaryInstallError,
    RecordingManager,
    fetch_text,
    install_binaries,
    installed_version,
)

from .literals import BINARY_NAME, CHECKSUM_LIMIT, SERVICES

if TYPE_CHECKING:
    from kaji.host import Host

    from .config import ControlPlaneConfig


class BinaryError(Exception):
    """The Kubernetes binaries could not be installed."""


def locate_binaries(
    host: Host, which: Callable[[str], str | None] = shutil.which
) -> dict[str, str]:
    """Sandbox: the binaries found on PATH; where any is missing, record services only.

    In a sandbox nothing is downloaded. If a server binary is not on this machine's PATH, the
    host's service manager becomes a RecordingManager (services recorded, never run) and the
    binaries are named at their install path.
    """
    found = {name: which(name) for name in k8s.SERVER_BINARIES}
    daemons_present = all(found[name] for name in SERVICES)
    if not daemons_present and host.services.runs_processes:
        host.services = RecordingManager(host.path("/var/lib/kaji/services"))
    install_dir = host.path(f"/opt/kaji/{BINARY_NAME}/current")
    return {
        name: (path if daemons_present and path else str(install_dir / name))
        for name, path in found.items()
    }


def install_release(
    host: Host,
    settings: ControlPlaneConfig,
    resource: str | None,
    arch: str,
) -> dict[str, str]:
    """Production: install the server binaries from the resource or the checksummed release.

    Raises:
        kaji.host.BinaryInstallError: a download, checksum or archive problem.
    """
    version = str(settings.version)
    kwargs: dict[str, Any] = {
        "files": list(k8s.SERVER_BINARIES),
        "strip_components": k8s.TARBALL_STRIP_COMPONENTS,
        "timeout": 120,
    }
    if resource is not None:
        result = install_binaries(
            host,
            BINARY_NAME,
            version,
            source=resource,
            sha256=settings.kubernetes_sha256,
            **kwargs,
        )
        current = result.current
    elif installed_version(host, BINARY_NAME) == version:
        current = host.path(f"/opt/kaji/{BINARY_NAME}/current")
    else:
        url = k8s.server_tarball_url(settings.version, arch, settings.release_mirror)
        sha = settings.kubernetes_sha256
        if sha is None:
            try:
                sha = k8s.parse_sha256_file(
                    fetch_text(k8s.checksum_url(url), limit=CHECKSUM_LIMIT)
                )
            except (OSError, ValueError) as exc:
                raise BinaryInstallError(f"cannot get the checksum of {url}: {exc}") from exc
        current = install_binaries(
            host, BINARY_NAME, version, url=url, sha256=sha, **kwargs
        ).current
    return {name: str(current / name) for name in k8s.SERVER_BINARIES}


def install(host: Host, settings: ControlPlaneConfig, resource: str | None) -> dict[str, str]:
    """The server binaries by name: located (sandbox) or installed (the resource, or download).

    Raises:
        BinaryError: they could not be installed.
    """
    if host.is_sandbox:
        return locate_binaries(host)
    try:
        return install_release(host, settings, resource, k8s.machine_arch())
    except BinaryInstallError as exc:
        raise BinaryError(str(exc)) from exc

"""The workload layer: files, commands, services and binaries of one machine.

Charms never call subprocess, systemctl or open() themselves; they go through a ``Host``,
which maps machine paths into its root (``/`` in production, a sandbox in tests and in the
offline model), writes files only when their content or mode differs, restarts a service only
when its spec or a watched file changed, and counts what it did in ``Host.stats``.

Importing this package imports none of its submodules: each name below loads its submodule
when first used (``kaji.lazy.lazy_exports``), so a hook that only needs ``Host`` never loads
the binary installer (tarfile, urllib.request) or the process manager. Every download
(``install_binaries``, ``fetch_text``) goes through the model's proxies (``kaji.host.proxy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kaji.lazy import lazy_exports

if TYPE_CHECKING:
    from kaji.host.binaries import InstallResult, fetch_text, install_binaries, installed_version
    from kaji.host.commands import (
        CommandError,
        CommandResult,
        CommandTimeout,
        CommandTimeoutError,
        run,
    )
    from kaji.host.errors import BinaryInstallError, HostError, PathEscapeError, ServiceError
    from kaji.host.files import (
        ensure_directory,
        ensure_symlink,
        read_bytes,
        read_text,
        remove_file,
        write_file,
    )
    from kaji.host.processes import ProcessManager
    from kaji.host.proxy import ProxyError, ProxySettings, proxy_settings
    from kaji.host.root import CountingServiceManager, Host, HostStats, host_from_environment
    from kaji.host.services import (
        RecordingManager,
        ServiceChange,
        ServiceManager,
        ServiceSpec,
        service_fingerprint,
    )
    from kaji.host.systemd import SystemdManager, render_systemd_unit

#: Each exported name and the submodule that defines it.
_EXPORTS = {
    "BinaryInstallError": "errors",
    "CommandError": "commands",
    "CommandResult": "commands",
    "CommandTimeout": "commands",
    "CommandTimeoutError": "commands",
    "CountingServiceManager": "root",
    "Host": "root",
    "HostError": "errors",
    "HostStats": "root",
    "InstallResult": "binaries",
    "PathEscapeError": "errors",
    "ProcessManager": "processes",
    "ProxyError": "proxy",
    "ProxySettings": "proxy",
    "RecordingManager": "services",
    "ServiceChange": "services",
    "ServiceError": "errors",
    "ServiceManager": "services",
    "ServiceSpec": "services",
    "SystemdManager": "systemd",
    "ensure_directory": "files",
    "ensure_symlink": "files",
    "fetch_text": "binaries",
    "host_from_environment": "root",
    "install_binaries": "binaries",
    "installed_version": "binaries",
    "proxy_settings": "proxy",
    "read_bytes": "files",
    "read_text": "files",
    "remove_file": "files",
    "render_systemd_unit": "systemd",
    "run": "commands",
    "service_fingerprint": "services",
    "write_file": "files",
}
_SUBMODULES = (
    "binaries",
    "commands",
    "errors",
    "files",
    "processes",
    "proxy",
    "root",
    "services",
    "systemd",
)

__all__ = [
    "BinaryInstallError",
    "CommandError",
    "CommandResult",
    "CommandTimeout",
    "CommandTimeoutError",
    "CountingServiceManager",
    "Host",
    "HostError",
    "HostStats",
    "InstallResult",
    "PathEscapeError",
    "ProcessManager",
    "ProxyError",
    "ProxySettings",
    "RecordingManager",
    "ServiceChange",
    "ServiceError",
    "ServiceManager",
    "ServiceSpec",
    "SystemdManager",
    "ensure_directory",
    "ensure_symlink",
    "fetch_text",
    "host_from_environment",
    "install_binaries",
    "installed_version",
    "proxy_settings",
    "read_bytes",
    "read_text",
    "remove_file",
    "render_systemd_unit",
    "run",
    "service_fingerprint",
    "write_file",
]

if not TYPE_CHECKING:
    __getattr__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)


def __dir__() -> list[str]:
    """The package's names, loaded or not."""
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})

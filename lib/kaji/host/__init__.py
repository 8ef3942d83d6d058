"""The workload layer: files, commands, services and binaries of one machine.

Charms never call subprocess, systemctl or open() themselves; they go through a ``Host``,
which maps machine paths into its root (``/`` in production, a sandbox in tests and in the
offline model), writes files only when their content or mode differs, restarts a service only
when its spec or a watched file changed, and counts what it did in ``Host.stats``.

Importing this package costs only stdlib modules that ``ops`` already imports; tarfile and
urllib.request are imported when a binary is installed. Every download (``install_binaries``,
``fetch_text``) goes through the model's proxies (``kaji.host.proxy``).
"""

from __future__ import annotations

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

"""The Host facade: one machine (or a sandbox standing in for one) as the charms see it."""

from __future__ import annotations

import builtins
import dataclasses
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from kaji.host import commands, files
from kaji.host.errors import PathEscapeError
from kaji.host.services import (
    NoServiceManager,
    RecordingManager,
    ServiceChange,
    ServiceManager,
    ServiceSpec,
)
from kaji.host.systemd import SystemdManager
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from kaji.host import processes
else:  # only the offline model's real processes need it
    processes = lazy_import("kaji.host.processes")


@dataclass
class HostStats:
    """What a Host changed: the counters benchmarks and the offline model report."""

    files_written: int = 0
    files_removed: int = 0
    commands_run: int = 0
    services_started: int = 0
    services_restarted: int = 0
    services_reloaded: int = 0
    services_stopped: int = 0
    binaries_installed: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return dataclasses.asdict(self)

    def reset(self) -> None:
        """Set every counter back to zero."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)


class CountingServiceManager:
    """A ServiceManager that forwards to another one and counts the changes in HostStats."""

    def __init__(self, manager: ServiceManager, stats: HostStats) -> None:
        self.manager = manager
        self.stats = stats

    @property
    def runs_processes(self) -> bool:
        """Whether the wrapped manager really runs processes."""
        return self.manager.runs_processes

    def ensure(self, spec: ServiceSpec) -> ServiceChange:
        """Start the service if stopped; restart it if its fingerprint changed; else nothing."""
        change = self.manager.ensure(spec)
        if change is ServiceChange.STARTED:
            self.stats.services_started += 1
        elif change is ServiceChange.RESTARTED:
            self.stats.services_restarted += 1
        return change

    def reload(self, name: str) -> None:
        """Ask a running service to reload its configuration."""
        self.manager.reload(name)
        self.stats.services_reloaded += 1

    def stop(self, name: str) -> bool:
        """Stop the service; return whether it was running."""
        stopped = self.manager.stop(name)
        self.stats.services_stopped += stopped
        return stopped

    def remove(self, name: str) -> bool:
        """Stop the service and forget it; return whether it was known."""
        return self.manager.remove(name)

    def is_running(self, name: str) -> bool:
        """Whether the service is running now."""
        return self.manager.is_running(name)

    def list(self) -> builtins.list[str]:
        """Names of the known services."""
        return self.manager.list()

    def get(self, name: str) -> ServiceSpec | None:
        """The spec the service was last (re)started with."""
        return self.manager.get(name)

    def __getattr__(self, name: str) -> Any:
        # Manager-specific extras (ProcessManager.pid, RecordingManager.record, ...).
        return getattr(self.manager, name)


class Host:
    """One machine: its files, commands and services, optionally inside a sandbox root.

    With ``root="/"`` (production) machine paths are used as they are; give it its service
    manager (``host_from_environment`` gives it systemd), without one every service call
    raises ServiceError. With any other root, every machine path lives under it (``/etc/x``
    becomes ``<root>/etc/x``), services default to a RecordingManager keeping its state in
    ``<root>/var/lib/kaji/services``, and file ownership is not applied (the service users
    usually do not exist on the test machine) unless ``apply_ownership`` says so.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        services: ServiceManager | None = None,
        *,
        apply_ownership: bool | None = None,
        loopback_address: str = "127.0.0.1",
        hostname: str | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        #: Where this machine's local-only listeners bind (a local API load balancer, say):
        #: 127.0.0.1 in production, a 127.0.1.N of its own for each sandboxed machine.
        self.loopback_address = loopback_address
        #: The machine's hostname: the real one, or the one a sandboxed machine was given.
        self.hostname = hostname or socket.gethostname()
        self.is_sandbox = self.root != Path("/")
        self.apply_ownership = not self.is_sandbox if apply_ownership is None else apply_ownership
        self.stats = HostStats()
        if services is None:
            if self.is_sandbox:
                services = RecordingManager(self.path("/var/lib/kaji/services"))
            else:
                services = NoServiceManager()
        self._services = CountingServiceManager(services, self.stats)

    def __repr__(self) -> str:
        return f"Host(root={str(self.root)!r})"

    @property
    def services(self) -> CountingServiceManager:
        """The service manager (every change it makes is counted in ``stats``)."""
        return self._services

    @services.setter
    def services(self, manager: ServiceManager) -> None:
        self._services = CountingServiceManager(manager, self.stats)

    # -- paths -------------------------------------------------------------------------------

    def path(self, machine_path: str | PurePath) -> Path:
        """Map an absolute machine path to the real path under this host's root.

        Raises:
            PathEscapeError: the path is relative, holds a ``..`` component or NUL, or (in a
                sandbox) resolves through a symlink to somewhere outside the root.
        """
        text = os.fspath(machine_path)
        if not text.startswith("/"):
            raise PathEscapeError(f"machine path must be absolute: {text!r}")
        if "\0" in text or ".." in text.split("/"):
            raise PathEscapeError(f"machine path must not contain '..' or NUL: {text!r}")
        if not self.is_sandbox:
            return Path(text)
        real = Path(f"{self.root}/{text.lstrip('/')}")
        resolved = os.path.realpath(real)
        root = os.path.realpath(self.root)
        if resolved != root and not resolved.startswith(root.rstrip("/") + "/"):
            raise PathEscapeError(f"machine path {text!r} resolves outside {self.root}")
        return real

    def machine_path(self, real_path: str | os.PathLike[str]) -> str:
        """The machine path of a real path under this host's root (inverse of ``path``)."""
        real = Path(os.path.abspath(real_path))
        try:
            rel = real.relative_to(self.root)
        except ValueError:
            raise PathEscapeError(f"{real} is not under {self.root}") from None
        return "/" + rel.as_posix() if rel.parts else "/"

    # -- files -------------------------------------------------------------------------------

    def write_file(
        self,
        path: str | PurePath,
        content: str | bytes,
        *,
        mode: int = 0o644,
        owner: str | int | None = None,
        group: str | int | None = None,
    ) -> bool:
        """Write a machine file atomically unless identical (see ``files.write_file``)."""
        if not self.apply_ownership:
            owner = group = None
        changed = files.write_file(self.path(path), content, mode=mode, owner=owner, group=group)
        self.stats.files_written += changed
        return changed

    def read_text(self, path: str | PurePath) -> str | None:
        """The text of a machine file, or None when it does not exist."""
        return files.read_text(self.path(path))

    def read_bytes(self, path: str | PurePath) -> bytes | None:
        """The content of a machine file, or None when it does not exist."""
        return files.read_bytes(self.path(path))

    def remove_file(self, path: str | PurePath) -> bool:
        """Remove a machine file; return False when it did not exist."""
        removed = files.remove_file(self.path(path))
        self.stats.files_removed += removed
        return removed

    def exists(self, path: str | PurePath) -> bool:
        """Whether a machine path exists."""
        return self.path(path).exists()

    def ensure_directory(
        self,
        path: str | PurePath,
        mode: int = 0o755,
        *,
        owner: str | int | None = None,
        group: str | int | None = None,
    ) -> bool:
        """Make a machine directory exist with ``mode``; return True if changed."""
        if not self.apply_ownership:
            owner = group = None
        return files.ensure_directory(self.path(path), mode, owner=owner, group=group)

    # -- commands ----------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        timeout: float = 60,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        cwd: str | os.PathLike[str] | None = None,
    ) -> commands.CommandResult:
        """Run a command on this machine (see ``commands.run``); counted in ``stats``."""
        self.stats.commands_run += 1
        return commands.run(argv, timeout=timeout, input=input, env=env, check=check, cwd=cwd)


#: Environment variables that put a charm's Host into a sandbox (tests, the offline model).
ROOT_ENV = "KAJI_HOST_ROOT"
PROCESSES_ENV = "KAJI_HOST_PROCESSES"
LOOPBACK_ENV = "KAJI_HOST_LOOPBACK"
HOSTNAME_ENV = "KAJI_HOST_HOSTNAME"


def host_from_environment(environ: Mapping[str, str] | None = None) -> Host:
    """The Host a charm runs against: the real machine, or the sandbox the environment names.

    ``KAJI_HOST_ROOT`` sandboxes every path under that directory; with ``KAJI_HOST_PROCESSES=1``
    services really run as processes (state under ``<root>/var/lib/kaji/processes``),
    otherwise they are only recorded; ``KAJI_HOST_LOOPBACK`` is the machine's local-only
    address; ``KAJI_HOST_HOSTNAME`` its hostname. Without ``KAJI_HOST_ROOT`` this is the
    machine itself, with systemd.
    """
    environ = os.environ if environ is None else environ
    root = environ.get(ROOT_ENV)
    loopback = environ.get(LOOPBACK_ENV, "127.0.0.1")
    hostname = environ.get(HOSTNAME_ENV) or None
    if not root:
        host = Host("/", loopback_address=loopback, hostname=hostname)
        host.services = SystemdManager(host)
        return host
    services: ServiceManager | None = None
    if environ.get(PROCESSES_ENV) == "1":
        # Watch a new process for up to a second (less once it listens): a service that
        # cannot start says why in this hook, not after minutes of health checks.
        services = processes.ProcessManager(
            Path(root) / "var/lib/kaji/processes", startup_grace=1.0
        )
    return Host(root, services, loopback_address=loopback, hostname=hostname)

"""systemd: unit files rendered from ServiceSpecs, and a manager driving systemctl."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Protocol

from kaji.host.commands import CommandResult
from kaji.host.errors import ServiceError
from kaji.host.services import ServiceSpec, StatefulManager

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "%": "%%"}


def _escape(value: str, *, dollar: bool) -> str:
    """Escape for a double-quoted systemd value (C escapes, %-specifiers, optionally $)."""
    out = []
    for ch in value:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif ch == "$" and dollar:
            out.append("$$")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def quote_exec_argument(arg: str) -> str:
    """Quote one argv item for ExecStart= so systemd passes it to the program verbatim.

    Words of plain characters stay bare; anything else is double-quoted with C escapes, ``%``
    doubled (specifiers) and ``$`` doubled (environment variable expansion).
    """
    if _SAFE_WORD.fullmatch(arg):
        return arg
    return f'"{_escape(arg, dollar=True)}"'


def render_systemd_unit(spec: ServiceSpec) -> str:
    """Render the systemd unit file for ``spec`` (installed into multi-user.target)."""
    unit = [
        "# Managed by kaji: local changes are overwritten.",
        "[Unit]",
        f"Description={(spec.description or spec.name).replace('%', '%%')}",
    ]
    if spec.after:
        unit.append(f"After={' '.join(spec.after)}")
    if spec.requires:
        unit.append(f"Requires={' '.join(spec.requires)}")
    if spec.wants:
        unit.append(f"Wants={' '.join(spec.wants)}")
    unit += ["", "[Service]", f"Type={spec.type}"]
    if spec.user:
        unit.append(f"User={spec.user}")
    if spec.group:
        unit.append(f"Group={spec.group}")
    if spec.working_directory:
        unit.append(f"WorkingDirectory={spec.working_directory.replace('%', '%%')}")
    for key, value in spec.environment:
        unit.append(f'Environment="{key}={_escape(value, dollar=False)}"')
    unit.append(f"ExecStart={' '.join(quote_exec_argument(a) for a in spec.argv)}")
    if spec.reload_signal:
        unit.append(f"ExecReload=/bin/kill -s {spec.reload_signal} $MAINPID")
    unit.append(f"Restart={spec.restart}")
    unit.append(f"RestartSec={spec.restart_sec:g}")
    if spec.limit_nofile is not None:
        unit.append(f"LimitNOFILE={spec.limit_nofile}")
    unit += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(unit)


class UnitHost(Protocol):
    """What SystemdManager needs of its machine (a ``kaji.host.Host`` is one)."""

    def path(self, machine_path: str | PurePath) -> Path:
        """The real path of a machine path."""
        ...

    def write_file(self, path: str | PurePath, content: str | bytes, *, mode: int = ...) -> bool:
        """Write a machine file unless identical; return whether it changed."""
        ...

    def remove_file(self, path: str | PurePath) -> bool:
        """Remove a machine file; return whether it existed."""
        ...

    def run(
        self, argv: Sequence[str | os.PathLike[str]], *, timeout: float = ..., check: bool = ...
    ) -> CommandResult:
        """Run a command on the machine."""
        ...


class SystemdManager(StatefulManager):
    """Runs services as systemd units.

    Unit files go to ``<unit_dir>/<name>.service`` through the host (so writes are counted
    and an unchanged unit is not rewritten); ``systemctl daemon-reload`` runs only when a unit
    file changed. The systemctl program is configurable so tests can substitute a recorder.
    """

    runs_processes = True

    def __init__(
        self,
        host: UnitHost,
        *,
        systemctl: str = "systemctl",
        unit_dir: str = "/etc/systemd/system",
        state_dir: str = "/var/lib/kaji/services",
        timeout: float = 120,
    ) -> None:
        super().__init__(host.path(state_dir))
        self.host = host
        self.systemctl = systemctl
        self.unit_dir = unit_dir
        self.timeout = timeout

    def unit_machine_path(self, name: str) -> str:
        """The machine path of the unit file of service ``name``."""
        self._state_path(name)  # validates the name
        return f"{self.unit_dir}/{name}.service"

    def unit_path(self, name: str) -> Path:
        """The real path of the unit file of service ``name``."""
        return self.host.path(self.unit_machine_path(name))

    def _systemctl(self, *args: str, check: bool = True) -> int:
        result = self.host.run([self.systemctl, *args], timeout=self.timeout, check=False)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise ServiceError(
                f"systemctl {' '.join(args)} failed with status {result.returncode}: {detail}"
            )
        return result.returncode

    def _prepare(self, spec: ServiceSpec) -> None:
        if self.host.write_file(self.unit_machine_path(spec.name), render_systemd_unit(spec)):
            self._systemctl("daemon-reload")

    def _start(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        self._systemctl("enable", "--now", spec.unit_name)
        return {}

    def _restart(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        self._systemctl("restart", spec.unit_name)
        return {}

    def is_running(self, name: str) -> bool:
        """Whether ``systemctl is-active`` reports the unit active."""
        self._state_path(name)
        return self._systemctl("is-active", "--quiet", f"{name}.service", check=False) == 0

    def reload(self, name: str) -> None:
        """``systemctl reload`` the unit (its spec needs a reload_signal)."""
        self._systemctl("reload", f"{name}.service")

    def stop(self, name: str) -> bool:
        """Stop and disable the unit (so it stays stopped across reboots)."""
        if not os.path.exists(self.unit_path(name)):
            return False
        running = self.is_running(name)
        self._systemctl("disable", "--now", f"{name}.service")
        return running

    def remove(self, name: str) -> bool:
        """Stop and disable the unit, delete its unit file and forget it."""
        known = os.path.exists(self.unit_path(name))
        if known:
            self._systemctl("disable", "--now", f"{name}.service")
            self.host.remove_file(self.unit_machine_path(name))
            self._systemctl("daemon-reload")
        return self._forget(name) or known

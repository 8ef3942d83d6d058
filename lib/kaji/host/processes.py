"""Services run as plain child processes: for tests and the offline model.

Each service runs in a session of its own, with stdout and stderr appended to
``<state_dir>/<name>.log`` and its pid in ``<state_dir>/<name>.pid``. The state survives the
manager object: a new ProcessManager on the same ``state_dir`` finds the running processes,
and checks each pid is still the same process (its start time in /proc) before trusting it.
Processes are not supervised (nothing restarts a crashed one until the next ``ensure``), and
``user``/``group`` of the spec are not applied.

A service that exits right after starting raises ServiceError naming the cause in plain words
when the log shows a known one (``etcd: cannot listen on 127.0.1.1:2380: address already in
use (held by pid 42)``), the last log line otherwise.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kaji.host import commands, files
from kaji.host.errors import HostError, ServiceError
from kaji.host.services import ServiceSpec, StatefulManager

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live process, None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


@dataclasses.dataclass(frozen=True)
class Listener:
    """A listening TCP socket of this host (from /proc/net/tcp and tcp6)."""

    address: str
    port: int
    inode: int


def tcp_listeners() -> list[Listener]:
    """Every listening TCP socket in this network namespace."""
    found: list[Listener] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            raw, port = fields[1].split(":")
            packed = bytes.fromhex(raw)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
            address = ipaddress.ip_address(words)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found.append(Listener(str(address), int(port, 16), int(fields[9])))
    return found


def socket_owners(inodes: Iterable[int]) -> dict[int, int]:
    """Map socket inode -> pid of a process holding it (processes this user may inspect)."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    owners: dict[int, int] = {}
    if not wanted:
        return owners
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target in wanted:
                    owners.setdefault(wanted[target], int(entry.name))
        if len(owners) == len(wanted):
            break
    return owners


def listener_holder(address: str, port: int) -> int | None:
    """The pid holding ``address:port`` (or the wildcard on that port) open, if visible."""
    matches = [
        lst
        for lst in tcp_listeners()
        if lst.port == port and lst.address in (address, "0.0.0.0", "::")  # noqa: S104
    ]
    owners = socket_owners(m.inode for m in matches)
    for match in matches:
        if match.inode in owners:
            return owners[match.inode]
    return None


def holds_listener(pid: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket."""
    try:
        links = {os.readlink(fd.path) for fd in os.scandir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    sockets = {t for t in links if t.startswith("socket:[")}
    return any(f"socket:[{lst.inode}]" in sockets for lst in tcp_listeners())


_IN_USE = re.compile(r"address already in use", re.I)
_NOT_AVAILABLE = re.compile(r"cannot assign requested address", re.I)
_HOST_PORT = re.compile(r"\[?((?:\d{1,3}\.){3}\d{1,3}|[0-9a-f:]*:[0-9a-f:]+)\]?:(\d{1,5})\b")
#: Python's form: ``('127.0.0.1', 8080)``.
_TUPLE = re.compile(r"\('((?:\d{1,3}\.){3}\d{1,3})',\s*(\d{1,5})\)")
_PERMISSION = re.compile(r"permission denied", re.I)


def startup_failure_cause(name: str, log: str, code: int | None) -> str:
    """The reason a service exited right after starting, in plain words, from its log."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in lines:
        for pattern, what in (
            (_IN_USE, "address already in use"),
            (_NOT_AVAILABLE, "address not available on this machine"),
        ):
            if not pattern.search(line):
                continue
            where = _HOST_PORT.search(line) or _TUPLE.search(line)
            if where is None:
                return f"{name}: cannot listen: {what}"
            address, port = where.group(1), int(where.group(2))
            holder = listener_holder(address, port) if pattern is _IN_USE else None
            held = f" (held by pid {holder})" if holder is not None else ""
            return f"{name}: cannot listen on {address}:{port}: {what}{held}"
    for line in lines:
        if _PERMISSION.search(line):
            return f"{name}: permission denied: {_short(line)}"
    last = _short(lines[-1]) if lines else "no output"
    return f"{name} exited with status {code} right after starting: {last}"


def _short(line: str) -> str:
    """A log line without JSON/logfmt noise, at most 200 characters."""
    match = re.search(r'"(?:msg|error|err)"\s*:\s*"([^"]*)"', line)
    text = match.group(1) if match else line
    return text if len(text) <= 200 else text[:197] + "..."


class ProcessManager(StatefulManager):
    """Runs services as real processes in their own sessions, tracked by pid files."""

    runs_processes = True

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        stop_timeout: float = 10.0,
        startup_grace: float = 0.1,
    ) -> None:
        """Create a manager keeping its state, pid and log files in ``state_dir``.

        Args:
            state_dir: directory for ``<name>.json``, ``<name>.pid`` and ``<name>.log``.
            stop_timeout: seconds between SIGTERM and SIGKILL when stopping.
            startup_grace: seconds a new process is watched; exiting within them is an error.
                The watch ends early once the process listens on a TCP port (it is serving).
        """
        super().__init__(state_dir)
        self.stop_timeout = stop_timeout
        self.startup_grace = startup_grace

    def pid_path(self, name: str) -> Path:
        """The pid file of service ``name``."""
        return self._state_path(name).with_suffix(".pid")

    def log_path(self, name: str) -> Path:
        """The log file (stdout and stderr) of service ``name``."""
        return self._state_path(name).with_suffix(".log")

    def pid(self, name: str) -> int | None:
        """The pid of the running service, or None when it is not running."""
        state = self._load(name)
        if not state or not state.get("pid"):
            return None
        pid = int(state["pid"])
        commands.reap(pid)
        start_time = process_start_time(pid)
        if start_time is None or start_time != state.get("start_time"):
            return None
        return pid

    def is_running(self, name: str) -> bool:
        """Whether the recorded pid is alive and still the process this manager started."""
        return self.pid(name) is not None

    def _start(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH), "LANG": "C.UTF-8", **spec.env}
        log = self.log_path(spec.name)
        offset = log.stat().st_size if log.exists() else 0
        try:
            pid = commands.spawn(
                spec.argv,
                env=env,
                log_path=log,
                cwd=spec.working_directory,
                limit_nofile=spec.limit_nofile,
            )
        except HostError as exc:
            raise ServiceError(f"service {spec.name}: {exc}") from exc
        start_time = process_start_time(pid)
        deadline = time.monotonic() + self.startup_grace
        checks = 0
        while True:
            code = commands.reap(pid)
            if code is not None or start_time is None:
                raise ServiceError(
                    startup_failure_cause(spec.name, self._log_since(log, offset), code)
                )
            if time.monotonic() >= deadline:
                break
            checks += 1
            if checks % 10 == 0 and holds_listener(pid):
                break
            time.sleep(0.01)
        files.write_file(self.pid_path(spec.name), f"{pid}\n")
        return {"pid": pid, "start_time": start_time}

    def _restart(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        self._terminate(spec.name)
        return self._start(spec, state)

    @staticmethod
    def _log_since(log: Path, offset: int) -> str:
        data = files.read_bytes(log) or b""
        return data[offset:].decode("utf-8", "replace").strip()[-2000:]

    def _terminate(self, name: str) -> bool:
        pid = self.pid(name)
        if pid is None:
            files.remove_file(self.pid_path(name))
            return False
        # The service leads its own process group (new session): signal all of it.
        for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 5.0)):
            commands.signal_process_group(pid, sig)
            deadline = time.monotonic() + wait
            while self.pid(name) is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.pid(name) is None:
                break
        else:
            raise ServiceError(f"service {name} (pid {pid}) survived SIGKILL")
        commands.signal_process_group(pid, signal.SIGKILL)  # stragglers left in the group
        files.remove_file(self.pid_path(name))
        return True

    def stop(self, name: str) -> bool:
        """SIGTERM the service's process group, SIGKILL after ``stop_timeout``."""
        stopped = self._terminate(name)
        state = self._load(name)
        if state is not None and state.get("pid"):
            self._save(name, {**state, "pid": None, "start_time": None})
        return stopped

    def remove(self, name: str) -> bool:
        """Stop the service and forget it (its log file is kept)."""
        self._terminate(name)
        return self._forget(name)

    def reload(self, name: str) -> None:
        """Send the spec's reload_signal to the service's main process."""
        spec = self.get(name)
        pid = self.pid(name)
        if spec is None or pid is None:
            raise ServiceError(f"service {name} is not running")
        if not spec.reload_signal:
            raise ServiceError(f"service {name} has no reload_signal")
        os.kill(pid, signal.Signals[f"SIG{spec.reload_signal}"])

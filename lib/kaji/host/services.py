"""Services: what must run on the machine (ServiceSpec) and the managers that make it so.

A charm describes each service as a ServiceSpec and calls ``manager.ensure(spec)``. Every
manager keeps a fingerprint per service (the spec plus the content of its watched files) from
the moment it last started it, so ``ensure`` starts a stopped service, restarts a running one
only when that fingerprint changed, and otherwise does nothing.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from kaji.host import files
from kaji.host.errors import ServiceError

RestartPolicy = Literal["always", "on-failure", "no"]
ServiceType = Literal["simple", "exec", "notify"]

_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@-]+\.[a-z]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ACCOUNT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")
_SIGNAL_NAME = re.compile(r"[A-Z0-9]+")
_RESTART_POLICIES = ("always", "on-failure", "no")
_SERVICE_TYPES = ("simple", "exec", "notify")


class ServiceChange(enum.Enum):
    """What ``ServiceManager.ensure`` did."""

    STARTED = "started"
    RESTARTED = "restarted"
    UNCHANGED = "unchanged"

    @property
    def changed(self) -> bool:
        """Whether the service was (re)started."""
        return self is not ServiceChange.UNCHANGED


def _strings(values: Iterable[str | os.PathLike[str]], what: str) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not a string")
    return tuple(os.fspath(v) for v in values)


def _no_control_chars(value: str, what: str) -> None:
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"{what} must not contain control characters: {value!r}")


@dataclass(frozen=True, init=False)
class ServiceSpec:
    """A long-running service, described independently of how it is run.

    Paths in ``argv``, ``working_directory`` and ``watched_files`` are real paths on this
    machine (build them with ``Host.path`` so a sandboxed host gets sandboxed paths).
    ``watched_files`` are files whose content change means the service must restart; files a
    service picks up on reload should not be listed. ``environment`` is stored as a sorted
    tuple of pairs so specs are hashable; ``env`` gives it back as a dict.
    """

    name: str
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    description: str
    user: str | None
    group: str | None
    after: tuple[str, ...]
    requires: tuple[str, ...]
    wants: tuple[str, ...]
    restart: RestartPolicy
    restart_sec: float
    working_directory: str | None
    watched_files: tuple[str, ...]
    limit_nofile: int | None
    type: ServiceType
    reload_signal: str | None

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        environment: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        description: str = "",
        user: str | None = None,
        group: str | None = None,
        after: Sequence[str] = (),
        requires: Sequence[str] = (),
        wants: Sequence[str] = (),
        restart: RestartPolicy = "always",
        restart_sec: float = 5.0,
        working_directory: str | os.PathLike[str] | None = None,
        watched_files: Sequence[str | os.PathLike[str]] = (),
        limit_nofile: int | None = None,
        type: ServiceType = "simple",
        reload_signal: str | None = None,
    ) -> None:
        env_items = environment.items() if isinstance(environment, Mapping) else environment
        env = tuple(sorted((str(k), str(v)) for k, v in env_items))
        values: dict[str, Any] = {
            "name": name,
            "argv": _strings(argv, "argv"),
            "environment": env,
            "description": description,
            "user": user,
            "group": group,
            "after": _strings(after, "after"),
            "requires": _strings(requires, "requires"),
            "wants": _strings(wants, "wants"),
            "restart": restart,
            "restart_sec": float(restart_sec),
            "working_directory": (
                None if working_directory is None else os.fspath(working_directory)
            ),
            "watched_files": _strings(watched_files, "watched_files"),
            "limit_nofile": limit_nofile,
            "type": type,
            "reload_signal": reload_signal,
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._validate()

    def _validate(self) -> None:
        if not _SERVICE_NAME.fullmatch(self.name) or self.name.endswith(".service"):
            raise ValueError(f"invalid service name {self.name!r}")
        if not self.argv:
            raise ValueError(f"service {self.name}: argv must not be empty")
        for arg in self.argv:
            if "\0" in arg:
                raise ValueError(f"service {self.name}: argv item contains NUL: {arg!r}")
        if not os.path.isabs(self.argv[0]):
            raise ValueError(f"service {self.name}: the program must be an absolute path")
        names = set()
        for key, value in self.environment:
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"service {self.name}: invalid environment name {key!r}")
            if "\0" in value:
                raise ValueError(f"service {self.name}: environment {key} contains NUL")
            if key in names:
                raise ValueError(f"service {self.name}: environment {key} given twice")
            names.add(key)
        _no_control_chars(self.description, "description")
        for account in (self.user, self.group):
            if account is not None and not _ACCOUNT_NAME.fullmatch(account):
                raise ValueError(f"service {self.name}: invalid user/group name {account!r}")
        for unit in (*self.after, *self.requires, *self.wants):
            if not _UNIT_NAME.fullmatch(unit):
                raise ValueError(f"service {self.name}: invalid unit name {unit!r}")
        if self.restart not in _RESTART_POLICIES:
            raise ValueError(f"service {self.name}: restart must be one of {_RESTART_POLICIES}")
        if self.type not in _SERVICE_TYPES:
            raise ValueError(f"service {self.name}: type must be one of {_SERVICE_TYPES}")
        if not self.restart_sec >= 0:
            raise ValueError(f"service {self.name}: restart_sec must be >= 0")
        for path in (self.working_directory, *self.watched_files):
            if path is not None:
                _no_control_chars(path, "path")
                if not os.path.isabs(path):
                    raise ValueError(f"service {self.name}: path {path!r} must be absolute")
        if self.limit_nofile is not None and self.limit_nofile <= 0:
            raise ValueError(f"service {self.name}: limit_nofile must be positive")
        if self.reload_signal is not None and not _SIGNAL_NAME.fullmatch(self.reload_signal):
            raise ValueError(f"service {self.name}: reload_signal must look like 'HUP'")

    @property
    def env(self) -> dict[str, str]:
        """The environment as a dict."""
        return dict(self.environment)

    @property
    def unit_name(self) -> str:
        """The systemd unit name, e.g. ``etcd.service``."""
        return f"{self.name}.service"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``ServiceSpec.from_dict`` reverses it."""
        return {
            "name": self.name,
            "argv": list(self.argv),
            "environment": dict(self.environment),
            "description": self.description,
            "user": self.user,
            "group": self.group,
            "after": list(self.after),
            "requires": list(self.requires),
            "wants": list(self.wants),
            "restart": self.restart,
            "restart_sec": self.restart_sec,
            "working_directory": self.working_directory,
            "watched_files": list(self.watched_files),
            "limit_nofile": self.limit_nofile,
            "type": self.type,
            "reload_signal": self.reload_signal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceSpec:
        """Rebuild a spec from ``to_dict`` output (unknown keys are ignored)."""
        known = {k: v for k, v in data.items() if k in _FIELD_DEFAULTS or k in ("name", "argv")}
        return cls(**known)


_FIELD_DEFAULTS: dict[str, Any] = {
    k: v for k, v in ServiceSpec("x", ["/x"]).to_dict().items() if k not in ("name", "argv")
}


def service_fingerprint(spec: ServiceSpec) -> str:
    """A digest of the spec and of the content of its watched files.

    Fields still at their default are left out, so adding a field with a default to
    ServiceSpec does not restart every service on upgrade.
    """
    identity = {
        k: v for k, v in spec.to_dict().items() if k in ("name", "argv") or v != _FIELD_DEFAULTS[k]
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for path in spec.watched_files:
        digest.update(b"\0" + path.encode() + b"\0")
        data = files.read_bytes(path)
        digest.update(b"absent" if data is None else hashlib.sha256(data).digest())
    return digest.hexdigest()


class ServiceManager(Protocol):
    """Runs services described by ServiceSpecs."""

    #: False when the manager only records what would run (nothing is started).
    runs_processes: bool

    def ensure(self, spec: ServiceSpec) -> ServiceChange:
        """Start the service if stopped; restart it if its fingerprint changed; else nothing."""
        ...

    def reload(self, name: str) -> None:
        """Ask a running service to reload its configuration (its ``reload_signal``)."""
        ...

    def stop(self, name: str) -> bool:
        """Stop the service (it stays known); return whether it was running."""
        ...

    def remove(self, name: str) -> bool:
        """Stop the service and forget it; return whether it was known."""
        ...

    def is_running(self, name: str) -> bool:
        """Whether the service is running now."""
        ...

    def list(self) -> builtins.list[str]:
        """Names of the services this manager knows, sorted."""
        ...

    def get(self, name: str) -> ServiceSpec | None:
        """The spec the service was last (re)started with, or None."""
        ...


class NoServiceManager:
    """The services of a Host built for the real machine without a manager: none to run.

    Every call raises ServiceError; ``host_from_environment`` gives the machine systemd.
    """

    runs_processes = False

    def _refuse(self, *_: object) -> Any:
        raise ServiceError(
            "this Host has no service manager: build it with host_from_environment() "
            "or pass services="
        )

    ensure = reload = stop = remove = is_running = list = get = _refuse


class StatefulManager:
    """Shared fingerprint bookkeeping: one JSON state file per service in ``state_dir``."""

    runs_processes = False

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)

    # -- state files -------------------------------------------------------------------------

    def _state_path(self, name: str) -> Path:
        if not _SERVICE_NAME.fullmatch(name):
            raise ValueError(f"invalid service name {name!r}")
        return self.state_dir / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any] | None:
        text = files.read_text(self._state_path(name))
        if text is None:
            return None
        try:
            state = json.loads(text)
        except ValueError:
            return None  # a torn or foreign file: treat the service as unknown
        return state if isinstance(state, dict) else None

    def _save(self, name: str, state: Mapping[str, Any]) -> None:
        files.write_file(self._state_path(name), json.dumps(state, indent=1, sort_keys=True))

    def _forget(self, name: str) -> bool:
        return files.remove_file(self._state_path(name))

    # -- the protocol ------------------------------------------------------------------------

    def ensure(self, spec: ServiceSpec) -> ServiceChange:
        """Start the service if stopped; restart it if its fingerprint changed; else nothing."""
        self._prepare(spec)
        fingerprint = service_fingerprint(spec)
        state = self._load(spec.name) or {}
        if not self.is_running(spec.name):
            extra = self._start(spec, state)
            change = ServiceChange.STARTED
        elif state.get("fingerprint") != fingerprint:
            extra = self._restart(spec, state)
            change = ServiceChange.RESTARTED
        else:
            return ServiceChange.UNCHANGED
        self._save(
            spec.name, {**state, **extra, "spec": spec.to_dict(), "fingerprint": fingerprint}
        )
        return change

    def list(self) -> builtins.list[str]:
        """Names of the services this manager knows, sorted."""
        if not self.state_dir.is_dir():
            return []
        return sorted(p.stem for p in self.state_dir.glob("*.json"))

    def get(self, name: str) -> ServiceSpec | None:
        """The spec the service was last (re)started with, or None."""
        state = self._load(name)
        if state is None or "spec" not in state:
            return None
        return ServiceSpec.from_dict(state["spec"])

    def is_running(self, name: str) -> bool:  # pragma: no cover - abstract
        """Whether the service is running now."""
        raise NotImplementedError

    # -- hooks for subclasses ----------------------------------------------------------------

    def _prepare(self, spec: ServiceSpec) -> None:
        """Bring on-disk artefacts (unit files) up to date; runs on every ensure()."""

    def _start(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover

    def _restart(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover


class RecordingManager(StatefulManager):
    """Records specs and changes without running anything (binaries not on this machine).

    The fingerprint logic is the same as for the real managers; ``is_running`` reports the
    recorded state, and ``record(name)`` gives the counts of starts, restarts and reloads.
    """

    runs_processes = False

    def is_running(self, name: str) -> bool:
        """Whether the service is recorded as running."""
        state = self._load(name)
        return bool(state and state.get("running"))

    def _start(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        return {"running": True, "starts": state.get("starts", 0) + 1}

    def _restart(self, spec: ServiceSpec, state: Mapping[str, Any]) -> dict[str, Any]:
        return {"running": True, "restarts": state.get("restarts", 0) + 1}

    def reload(self, name: str) -> None:
        """Record a reload of a running service."""
        state = self._load(name)
        if not state or not state.get("running"):
            raise ServiceError(f"service {name} is not running")
        spec = state.get("spec", {})
        if not spec.get("reload_signal"):
            raise ServiceError(f"service {name} has no reload_signal")
        self._save(name, {**state, "reloads": state.get("reloads", 0) + 1})

    def stop(self, name: str) -> bool:
        """Record the service as stopped; return whether it was running."""
        state = self._load(name)
        if not state or not state.get("running"):
            return False
        self._save(name, {**state, "running": False})
        return True

    def remove(self, name: str) -> bool:
        """Forget the service; return whether it was known."""
        return self._forget(name)

    def record(self, name: str) -> dict[str, int | bool]:
        """Counts of starts, restarts and reloads, and whether it is running."""
        state = self._load(name) or {}
        return {
            "running": bool(state.get("running")),
            "starts": int(state.get("starts", 0)),
            "restarts": int(state.get("restarts", 0)),
            "reloads": int(state.get("reloads", 0)),
        }

"""What the offline model knows, as Juju would: machines, applications, units, relations, secrets.

These are plain dataclasses with a JSON form (``to_json``/``from_json``), so a model persists
between command-line calls in ``<model dir>/model.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Hook kinds that are ordered against every other pending hook of the same unit.
LIFECYCLE = frozenset(
    {
        "install",
        "leader-elected",
        "config-changed",
        "start",
        "update-status",
        "upgrade-charm",
        "stop",
        "remove",
    }
)
RELATION_HOOKS = frozenset(
    {
        "relation-created",
        "relation-joined",
        "relation-changed",
        "relation-departed",
        "relation-broken",
    }
)


@dataclass(frozen=True)
class Event:
    """A hook Juju would run on a unit.

    ``remote`` is the remote unit of joined/changed/departed (None for a change of the remote
    application's data); ``departing`` the unit leaving, for departed; ``revision`` the secret
    revision of secret-expired and secret-remove.
    """

    kind: str
    relation: int | None = None
    remote: str | None = None
    departing: str | None = None
    secret: str | None = None
    revision: int | None = None

    def __str__(self) -> str:
        parts = [self.kind]
        if self.relation is not None:
            parts.append(f"#{self.relation}")
        if self.remote:
            parts.append(self.remote)
        if self.secret:
            parts.append(self.secret)
        if self.revision is not None:
            parts.append(f"rev {self.revision}")
        return " ".join(parts)

    def conflicts(self, other: Event) -> bool:
        """Whether the two must run in the order they were queued (same unit)."""
        if self.kind in LIFECYCLE or other.kind in LIFECYCLE:
            return True
        if self.kind.startswith("secret-") or other.kind.startswith("secret-"):
            return self.secret == other.secret
        if self.relation != other.relation:
            return False
        whole = ("relation-created", "relation-broken")
        if self.kind in whole or other.kind in whole:
            return True
        return self.remote is None or other.remote is None or self.remote == other.remote


@dataclass
class Machine:
    """A machine of the model: a sandbox root, a hostname and addresses of its own.

    ``address`` is the ingress address (what other units reach it at); ``bind`` the address
    of its own interface, ``public`` its public address, ``loopback`` its 127.0.0.1 (see
    kaji.model.network). Models saved before these existed have only ``address``.
    """

    id: int
    hostname: str
    address: str
    bind: str = ""
    public: str = ""
    loopback: str = ""


@dataclass
class App:
    """An application: the charm it runs, its config and its leader."""

    name: str
    charm: str
    source: str
    subordinate: bool
    config: dict[str, Any] = field(default_factory=dict)
    leader: str | None = None
    next_unit: int = 0
    status: tuple[str, str] = ("unknown", "")
    #: Bumped by every refresh (the charm code the units run).
    revision: int = 0
    #: Attached resources: name -> the file the model keeps for it.
    resources: dict[str, str] = field(default_factory=dict)


@dataclass
class Unit:
    """A unit: its machine, status, ops state and the hooks waiting for it."""

    name: str
    app: str
    machine: int
    principal: str | None = None
    status: tuple[str, str] = ("waiting", "agent initialising")
    workload_version: str = ""
    stored_states: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, Any]] = field(default_factory=list)
    dying: bool = False
    error: str | None = None
    queue: list[Event] = field(default_factory=list)
    #: Relations whose scope the unit has entered (relation-created has run).
    scopes: list[int] = field(default_factory=list)
    #: Per relation: the remote units this unit has seen join (relation-list).
    joined: dict[int, list[str]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    hooks_by_kind: dict[str, int] = field(default_factory=dict)
    #: Model time (epoch seconds) of the unit's next update-status; None until installed.
    next_update_status: float | None = None
    #: Actions queued on the unit (ids into ``World.actions``), oldest first.
    actions: list[str] = field(default_factory=list)

    @property
    def number(self) -> int:
        """The unit number (``worker/3`` -> 3)."""
        return int(self.name.rsplit("/", 1)[1])


@dataclass
class Relation:
    """A relation: its endpoints and every databag, as Juju holds them."""

    id: int
    endpoints: dict[str, str]  # app -> endpoint; one entry for a peer relation
    interface: str
    container: bool = False
    peer: bool = False
    app_data: dict[str, dict[str, str]] = field(default_factory=dict)
    unit_data: dict[str, dict[str, str]] = field(default_factory=dict)

    def other_app(self, app: str) -> str:
        """The application at the other end (the same one for peers)."""
        if self.peer:
            return app
        return next(a for a in self.endpoints if a != app)

    def __str__(self) -> str:
        ends = [f"{a}:{e}" for a, e in self.endpoints.items()]
        return " ".join(ends)


@dataclass
class SecretRecord:
    """A Juju secret: owner, revisions, labels per observer, grants, tracked revisions."""

    id: str
    owner: str  # an application name (app-owned) or a unit name (unit-owned)
    owner_is_app: bool
    revisions: dict[int, dict[str, str]]
    latest: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    grants: dict[int, list[str]] = field(default_factory=dict)
    tracked: dict[str, int] = field(default_factory=dict)
    #: Rotation policy (hourly, daily, ...) and the model time the next secret-rotate is due.
    rotate: str | None = None
    next_rotate: float | None = None
    #: While a secret-rotate is pending: the time it was due and the latest revision then.
    rotating: tuple[float, int] | None = None
    #: Per revision: the expiry time the owner set (epoch seconds), and the model time the
    #: next secret-expired for it is due (Juju repeats it until the revision is removed).
    expires: dict[int, float] = field(default_factory=dict)
    expiry: dict[int, float] = field(default_factory=dict)
    #: Revisions no consumer tracks any more whose secret-remove has run.
    obsolete_done: list[int] = field(default_factory=list)


@dataclass
class World:
    """Everything the model holds."""

    uuid: str
    bundle: str = ""
    overlays: list[str] = field(default_factory=list)
    charms_dir: str | None = None
    processes: bool = False
    machines: dict[int, Machine] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    units: dict[str, Unit] = field(default_factory=dict)
    relations: dict[int, Relation] = field(default_factory=dict)
    secrets: dict[str, SecretRecord] = field(default_factory=dict)
    next_machine: int = 0
    next_relation: int = 0
    #: The model's clock (epoch seconds): what charms read through ``kaji.clock``.
    clock: float = 0.0
    #: Every action run or queued: id -> unit, name, params, status, results, message.
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_action: int = 0
    #: The model's loopback range: {"block": B, "range": "127.B.0.0/16"} (kaji.model.network).
    network: dict[str, Any] = field(default_factory=dict)

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole world."""
        data = dataclasses.asdict(self)
        for unit in data["units"].values():
            unit["queue"] = [{k: v for k, v in e.items() if v is not None} for e in unit["queue"]]
            unit["stored_states"] = [_tag(s) for s in unit["stored_states"]]
            unit["deferred"] = [_tag(d) for d in unit["deferred"]]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> World:
        """Rebuild a world from ``to_json`` output."""
        world = cls(
            uuid=data["uuid"],
            bundle=data.get("bundle", ""),
            overlays=list(data.get("overlays", [])),
            charms_dir=data.get("charms_dir"),
            processes=bool(data.get("processes")),
            next_machine=data["next_machine"],
            next_relation=data["next_relation"],
            clock=float(data.get("clock", 0.0)),
            actions=dict(data.get("actions", {})),
            next_action=int(data.get("next_action", 0)),
            network=dict(data.get("network") or {}),
        )
        for m in data["machines"].values():
            world.machines[int(m["id"])] = Machine(**m)
        for a in data["apps"].values():
            a["status"] = tuple(a["status"])
            world.apps[a["name"]] = App(**a)
        for u in data["units"].values():
            u["status"] = tuple(u["status"])
            u["queue"] = [Event(**e) for e in u["queue"]]
            u["joined"] = {int(k): v for k, v in u["joined"].items()}
            u["stored_states"] = [_untag(s) for s in u["stored_states"]]
            u["deferred"] = [_untag(d) for d in u["deferred"]]
            world.units[u["name"]] = Unit(**u)
        for r in data["relations"].values():
            world.relations[int(r["id"])] = Relation(**r)
        for s in data["secrets"].values():
            s["revisions"] = {int(k): v for k, v in s["revisions"].items()}
            s["grants"] = {int(k): v for k, v in s["grants"].items()}
            s["expiry"] = {int(k): v for k, v in s.get("expiry", {}).items()}
            s["expires"] = {int(k): v for k, v in s.get("expires", {}).items()}
            if s.get("rotating") is not None:
                s["rotating"] = tuple(s["rotating"])
            world.secrets[s["id"]] = SecretRecord(**s)
        return world


def _tag(value: Any) -> Any:
    """JSON form of ops stored-state content: sets and tuples tagged so they come back."""
    if isinstance(value, dict):
        return {"__dict__": [[_tag(k), _tag(v)] for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": [_tag(v) for v in sorted(value, key=repr)]}
    if isinstance(value, tuple):
        return {"__tuple__": [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if "__dict__" in value:
            return {_untag(k): _untag(v) for k, v in value["__dict__"]}
        if "__set__" in value:
            return {_untag(v) for v in value["__set__"]}
        if "__tuple__" in value:
            return tuple(_untag(v) for v in value["__tuple__"])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value

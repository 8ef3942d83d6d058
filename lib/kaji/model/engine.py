"""The offline model's engine: every unit's real charm, one Juju event at a time.

Each unit runs its charm through ops.testing (``Context``/``State``): the model builds the
State the unit would see (its config, leadership, the relations and remote data in its scope,
the secrets it may read, its machine's network), runs one hook, and takes back what the charm
changed — its databags, secrets, status, stored state — and queues the hooks Juju would run
on other units because of it. The charm's Host is a sandbox per machine
(``<model dir>/machines/<n>/root``), selected through the ``KAJI_HOST_*`` environment.

``Model`` here is the public API (persistence, deploy and scale, removal, time, actions,
refresh). It extends, layer on layer: ``kaji.model.hook.HookRunner`` (running one hook or
action), ``kaji.model.delivery.Delivery`` (the delivery queue) and
``kaji.model.scoping.Scoping`` (Juju's scoping rules: what a unit sees).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kaji.host.processes import ProcessManager
from kaji.model.bundle import Bundle, find_charm_sources, load_bundle
from kaji.model.charms import CharmCode, CharmLoadError
from kaji.model.delivery import SECRET_RETRY_DELAY, UPDATE_STATUS_INTERVAL
from kaji.model.errors import ModelError, NotConverging, NotConvergingError, RunStats
from kaji.model.hook import HookRunner
from kaji.model.network import (
    NetworkError,
    claim_range,
    machine_addresses,
    network_range,
    release_range,
    stop_forwarders,
)
from kaji.model.values import (
    action_params,
    convert_option,
)
from kaji.model.world import (
    LIFECYCLE,
    App,
    Event,
    Machine,
    Relation,
    Unit,
    World,
)

__all__ = [
    "COUNTERS",
    "DEFAULT_MODEL_DIR",
    "MODEL_FILE",
    "SECRET_RETRY_DELAY",
    "UPDATE_STATUS_INTERVAL",
    "Model",
    "ModelError",
    "NotConverging",
    "NotConvergingError",
    "RunStats",
    "action_params",
    "machine_address",
]

#: Juju's own keys in every unit databag.
JUJU_KEYS = ("egress-subnets", "ingress-address", "private-address")
#: Counters kept per unit (HostStats fields plus hooks, errors and deferred events).
COUNTERS = (
    "hooks",
    "files_written",
    "files_removed",
    "commands_run",
    "services_started",
    "services_restarted",
    "services_reloaded",
    "services_stopped",
    "binaries_installed",
    "deferred",
    "errors",
)
DEFAULT_MODEL_DIR = ".kaji-model"
MODEL_FILE = "model.json"
#: The longest gap ``wait`` leaves between update-status rounds while nothing changes.
DEFAULT_MAX_GAP_MINUTES = 24 * 60.0


logger = logging.getLogger(__name__)


def machine_address(machine_id: int) -> str:
    """The loopback address of machine ``n``: 127.0.1.(n+1), then 127.0.2.x, ..."""
    return f"127.0.{1 + machine_id // 254}.{1 + machine_id % 254}"


class Model(HookRunner):
    """An offline Juju model in a directory; see the module docstring.

    Create one with ``Model.create(dir)`` (or open a saved one with ``Model.load(dir)``), then
    ``deploy``, ``add_unit``, ``remove_unit``, ``set_config``, ``set_leader``, ``run_action``,
    ``refresh``, ``attach_resource``; each runs the hooks until nothing is pending. ``wait``
    lets model time pass (update-status, the secrets' timed hooks). ``save`` writes
    ``model.json``; ``destroy`` stops every process the charms started and removes the
    directory.
    """

    def __init__(self, directory: Path, world: World, *, seed: int | None = None) -> None:
        self.directory = directory
        self.world = world
        # Shuffles delivery order (reproducibly from the seed); nothing secret about it.
        self.rng = random.Random(seed) if seed is not None else None  # noqa: S311
        self._code: dict[tuple[str, str, int], CharmCode] = {}
        self._cursor = 0
        #: Container relations whose remote unit the unit being run has not joined.
        self._unjoined: set[int] = set()
        #: Every hook run by this object: (unit, hook, hook-tool calls), for benchmarks.
        self.tool_log: list[tuple[str, str, int]] = []
        #: The last events run, newest last (for NotConverging reports).
        self.history: collections.deque[tuple[str, Event]] = collections.deque(maxlen=40)

    # -- construction and persistence ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path | str = DEFAULT_MODEL_DIR,
        *,
        processes: bool = False,
        seed: int | None = None,
    ) -> Model:
        """A new, empty model in ``directory`` (which must not hold a model already).

        Args:
            directory: where machines, charm roots, logs and ``model.json`` live.
            processes: really run services whose binaries are on this machine
                (``KAJI_HOST_PROCESSES=1``); otherwise every service is only recorded.
            seed: shuffle the delivery order of hooks with this seed (None: round-robin).
        """
        directory = Path(directory).absolute()
        if (directory / MODEL_FILE).exists():
            raise ModelError(f"{directory} already holds a model (destroy it first)")
        directory.mkdir(parents=True, exist_ok=True)
        world = World(uuid=str(uuid.uuid4()), processes=processes)
        world.clock = float(int(time.time()))
        try:
            block = claim_range(directory)
        except NetworkError as error:
            raise ModelError(str(error)) from None
        world.network = {"block": block, "range": network_range(block)}
        model = cls(directory, world, seed=seed)
        model.save()  # the claim is held while model.json records it
        return model

    @classmethod
    def load(cls, directory: Path | str = DEFAULT_MODEL_DIR, *, seed: int | None = None) -> Model:
        """Open the model saved in ``directory``."""
        directory = Path(directory).absolute()
        path = directory / MODEL_FILE
        if not path.exists():
            raise ModelError(f"no model in {directory} (run deploy first)")
        world = World.from_json(json.loads(path.read_text()))
        if not world.clock:  # saved before the model had a clock
            world.clock = float(int(time.time()))
        return cls(directory, world, seed=seed)

    def save(self) -> Path:
        """Write ``model.json``; return its path."""
        path = self.directory / MODEL_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.world.to_json(), indent=1))
        tmp.replace(path)
        return path

    def destroy(self) -> list[str]:
        """Stop every process the model's machines run and remove the model directory.

        Returns the services that were stopped (``machine/service``).
        """
        stopped: list[str] = []
        for machine_id in sorted(self.world.machines):
            stopped += [f"{machine_id}/{s}" for s in self._stop_machine_processes(machine_id)]
        for forwarders in (self.directory / "network").glob("*"):
            stop_forwarders(forwarders)
        shutil.rmtree(self.directory, ignore_errors=True)
        if "block" in self.world.network:
            release_range(int(self.world.network["block"]), self.directory)
        return stopped

    # -- deploy and scale ---------------------------------------------------------------------

    def deploy(
        self,
        bundle_path: Path | str,
        overlays: Iterable[Path | str] = (),
        charms_dir: Path | str | None = None,
        *,
        settle: bool = True,
        from_source: bool = False,
    ) -> Bundle:
        """Check the bundle (every problem at once), add its applications, units and relations.

        A packed charm the bundle names is run when it exists, unless ``from_source`` says to
        run the charm source directory of the same name instead.

        Raises:
            BundleError: the bundle cannot be deployed.
        """
        overlays = list(overlays)
        bundle = load_bundle(bundle_path, overlays, charms_dir)
        sources: dict[str, Path] = {}
        if from_source:
            root = (
                Path(charms_dir) if charms_dir else bundle.path.resolve().parent.parent / "charms"
            )
            sources = find_charm_sources(root) if root.is_dir() else {}
        w = self.world
        w.bundle = str(Path(bundle_path).absolute())
        w.overlays = [str(Path(o).absolute()) for o in overlays]
        w.charms_dir = str(Path(charms_dir).absolute()) if charms_dir else None
        for app in bundle.applications.values():
            if app.name in w.apps:
                raise ModelError(f"application {app.name} is already deployed")
            w.apps[app.name] = App(
                name=app.name,
                charm=app.charm.name,
                source=str(sources.get(app.charm.name, app.charm.source)),
                subordinate=app.charm.subordinate,
                config=dict(app.options),
            )
            self.code(app.name)  # load now: a broken charm fails the deploy, not a hook
            for endpoint in app.charm.endpoints.values():
                if endpoint.role == "peers":
                    self._new_relation({app.name: endpoint.name}, endpoint.interface, peer=True)
        for r in bundle.relations:
            self._new_relation(
                {r.app_a: r.endpoint_a, r.app_b: r.endpoint_b},
                r.interface,
                container=r.container_scoped,
            )
        for app in bundle.applications.values():
            if not app.charm.subordinate:
                for _ in range(app.units):
                    self._add_unit(app.name)
        if settle:
            self.settle()
        return bundle

    def add_unit(self, app: str, count: int = 1, *, settle: bool = True) -> list[str]:
        """Add ``count`` units of a principal application (each on a new machine)."""
        info = self._app(app)
        if info.subordinate:
            raise ModelError(f"{app} is a subordinate: its units follow its principals")
        if count < 1:
            raise ModelError("add at least one unit")
        added = [self._add_unit(app).name for _ in range(count)]
        if settle:
            self.settle()
        return added

    def remove_unit(self, name: str, *, settle: bool = True) -> None:
        """Remove a principal unit (and the subordinates on its machine), as Juju would."""
        unit = self.world.units.get(name)
        if unit is None or unit.dying:
            raise ModelError(f"no unit {name}")
        if unit.principal is not None:
            raise ModelError(f"{name} is a subordinate; remove its principal or the relation")
        for other in list(self.world.units.values()):
            if other.principal == name:
                self._begin_removal(other)
        self._begin_removal(unit)
        if settle:
            self.settle()

    def set_config(self, app: str, values: Mapping[str, Any], *, settle: bool = True) -> None:
        """Change options of an application (strings are converted to the option's type)."""
        info = self._app(app)
        declared = self.code(app).config.get("options") or {}
        problems: list[str] = []
        converted: dict[str, Any] = {}
        for key, value in values.items():
            option = declared.get(key)
            if option is None:
                problems.append(f"{key!r} is not an option of {info.charm}")
                continue
            try:
                converted[key] = convert_option(value, str(option.get("type", "string")))
            except ValueError as e:
                problems.append(f"option {key!r}: {e}")
        if problems:
            raise ModelError("; ".join(problems))
        changed = False
        for key, value in converted.items():
            if info.config.get(key, _MISSING) != value:
                info.config[key] = value
                changed = True
        if changed:
            for unit in self.units_of(app):
                self._queue(unit, Event("config-changed"))
        if settle:
            self.settle()

    def set_leader(self, unit_name: str, *, settle: bool = True) -> None:
        """Move leadership of the unit's application to ``unit_name`` (leader-elected there)."""
        unit = self.world.units.get(unit_name)
        if unit is None or unit.dying:
            raise ModelError(f"no unit {unit_name}")
        app = self.world.apps[unit.app]
        if app.leader != unit_name:
            app.leader = unit_name
            self._queue(unit, Event("leader-elected"))
        if settle:
            self.settle()

    def run_everywhere(self, kind: str, *, settle: bool = True) -> RunStats | None:
        """Queue one hook (update-status, config-changed, ...) on every live unit."""
        if kind not in LIFECYCLE or kind in ("install", "remove", "stop"):
            raise ModelError(f"cannot run {kind} everywhere")
        for unit in self.world.units.values():
            if not unit.dying:
                self._queue(unit, Event(kind))
        return self.settle() if settle else None

    # -- time, actions, refresh, resources ------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The model's clock: what the charms read through ``kaji.clock``."""
        return datetime.fromtimestamp(self.world.clock, timezone.utc)

    def run_action(
        self,
        unit_name: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        settle: bool = True,
    ) -> dict[str, Any]:
        """Queue a Juju action on a unit (``app/leader`` names the leader); run it when settling.

        The params are checked against the charm's action schema as Juju checks them (JSON
        Schema, ``additionalProperties: false`` unless the action says otherwise) and the
        schema's defaults filled in. Returns the action's record: ``id``, ``unit``, ``name``,
        ``params``, ``status`` (pending, completed, failed, cancelled), ``message``, ``results``
        and ``log``; with ``settle=False`` it stays pending until the next settle.

        Raises:
            ModelError: no such unit or action, or the params do not validate.
        """
        w = self.world
        if unit_name.endswith("/leader"):
            app_name = unit_name.rsplit("/", 1)[0]
            leader = self._app(app_name).leader
            if leader is None:
                raise ModelError(f"{app_name} has no leader")
            unit_name = leader
        unit = w.units.get(unit_name)
        if unit is None:
            raise ModelError(f"no unit {unit_name}")
        actions = self.code(unit.app).actions
        if action not in actions:
            known = ", ".join(sorted(actions)) or "none"
            raise ModelError(f"{unit.app} has no action {action!r} (actions: {known})")
        values = action_params(action, actions[action] or {}, params or {})
        w.next_action += 1
        action_id = str(w.next_action)
        w.actions[action_id] = {
            "id": action_id,
            "unit": unit.name,
            "name": action,
            "params": values,
            "status": "pending",
            "message": "",
            "results": {},
            "log": [],
        }
        unit.actions.append(action_id)
        if settle:
            self.settle()
        return w.actions[action_id]

    def wait(
        self, minutes: float = 5.0, *, max_gap_minutes: float = DEFAULT_MAX_GAP_MINUTES
    ) -> RunStats:
        """Let model time pass: update-status and the secrets' timed hooks, as Juju runs them.

        Every installed unit runs update-status each Juju default interval (5 minutes; with a
        seed, ±20% per unit as Juju's timer does); secret-rotate and secret-expired reach the
        owner when due. To cover months quickly, once an hour has passed in which nothing
        observable changed (no databag, secret, status or error change, no service started,
        restarted or stopped; files a charm rewrites for itself do not count), the interval
        grows with the idle time (5 minutes per idle hour) up to ``max_gap_minutes`` (5 keeps
        the exact cadence); any change brings it back to 5 minutes. Secret deadlines are never
        skipped.
        """
        if minutes < 0:
            raise ModelError("time only runs forwards")
        w = self.world
        end = w.clock + minutes * 60
        stretch, idle_since = 1.0, w.clock
        limit = max(1.0, max_gap_minutes * 60 / UPDATE_STATUS_INTERVAL)
        for unit in w.units.values():
            if unit.next_update_status is None and unit.hooks_by_kind.get("install"):
                unit.next_update_status = w.clock + self._update_status_interval()
        before = self.counters()
        started = time.perf_counter()
        hooks = 0
        while True:
            due = self._next_due()
            if due is None or due > end:
                w.clock = end
                break
            w.clock = max(w.clock, due)
            self._fire_due(stretch)
            snapshot = self._observable()
            stats = self.settle()
            hooks += stats.hooks
            changed = snapshot != self._observable() or any(
                stats.total(counter) for counter in _HOST_CHANGES
            )
            if changed:
                stretch, idle_since = 1.0, w.clock
                soon = w.clock + UPDATE_STATUS_INTERVAL
                for unit in w.units.values():
                    if unit.next_update_status is not None:
                        unit.next_update_status = min(unit.next_update_status, soon)
            else:
                stretch = min(limit, max(1.0, (w.clock - idle_since) / _IDLE_BEFORE_STRETCH))
        after = self.counters()
        moved = {
            name: {k: v - before.get(name, {}).get(k, 0) for k, v in counters.items()}
            for name, counters in after.items()
        }
        return RunStats(hooks, time.perf_counter() - started, moved)

    def refresh(self, app: str, path: Path | str | None = None, *, settle: bool = True) -> None:
        """``juju refresh``: run new charm code (``path``, or the source again, re-read).

        Every installed unit of the application runs upgrade-charm, then config-changed, before
        anything else it has pending (Juju's uniter upgrades first and queues config-changed
        after upgrade-charm). Options the new charm no longer declares are dropped.

        Raises:
            ModelError: the new charm cannot be loaded, is another charm, or lacks an endpoint
                an existing relation uses.
        """
        info = self._app(app)
        source = Path(path).absolute() if path is not None else Path(info.source)
        work = self.directory / "charms" / f"{info.charm}@{info.revision + 1}"
        try:
            code = CharmCode(source, work)
        except CharmLoadError as e:
            shutil.rmtree(work, ignore_errors=True)
            raise ModelError(f"cannot refresh {app}: {e}") from None
        problems = []
        if code.name != info.charm:
            problems.append(f"{source} is charm {code.name}, not {info.charm}")
        if bool(code.meta.get("subordinate", False)) != info.subordinate:
            problems.append(f"{source} changes whether {info.charm} is a subordinate")
        for rel in self.world.relations.values():
            if app not in rel.endpoints:
                continue
            endpoint = rel.endpoints[app]
            try:
                spec = code.endpoint(endpoint)
            except KeyError:
                problems.append(f"relation {rel} needs endpoint {endpoint!r}, gone from {source}")
                continue
            if str(spec.get("interface", "")) != rel.interface:
                problems.append(
                    f"endpoint {endpoint!r} of {source} has interface "
                    f"{spec.get('interface')!r}, relation {rel} uses {rel.interface!r}"
                )
        if problems:
            shutil.rmtree(work, ignore_errors=True)
            raise ModelError(f"cannot refresh {app}: " + "; ".join(problems))
        info.revision += 1
        info.source = str(source)
        self._code[(info.charm, info.source, info.revision)] = code
        options = code.config.get("options") or {}
        for key in [k for k in info.config if k not in options]:
            del info.config[key]
        self._upgrade(app)
        if settle:
            self.settle()

    def attach_resource(
        self, app: str, name: str, file: Path | str, *, settle: bool = True
    ) -> bool:
        """``juju attach-resource``: the file becomes what resource-get gives the units.

        New content makes every installed unit run upgrade-charm (then config-changed), as
        Juju does when a resource's bytes change; the same content again changes nothing.
        Returns whether the content was new.

        Raises:
            ModelError: the charm declares no such file resource, or the file is missing.
        """
        info = self._app(app)
        resources = self.code(app).meta.get("resources") or {}
        spec = resources.get(name)
        if spec is None:
            known = ", ".join(sorted(resources)) or "none"
            raise ModelError(f"{info.charm} has no resource {name!r} (resources: {known})")
        if (spec or {}).get("type", "file") != "file":
            raise ModelError(f"resource {name!r} is not a file resource")
        source = Path(file)
        if not source.is_file():
            raise ModelError(f"no file {source}")
        content = source.read_bytes()
        filename = str((spec or {}).get("filename") or source.name)
        target = self.directory / "resources" / app / name / filename
        current = Path(info.resources[name]) if name in info.resources else None
        if current is not None and current.is_file() and current.read_bytes() == content:
            return False
        if current is not None and current != target:
            current.unlink(missing_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        info.resources[name] = str(target)
        self._upgrade(app)
        if settle:
            self.settle()
        return True

    def _upgrade(self, app: str) -> None:
        """Queue upgrade-charm then config-changed first on every installed unit of ``app``."""
        for unit in self.units_of(app):
            if not unit.hooks_by_kind.get("install"):
                continue  # not installed yet: it installs the new charm
            unit.queue = [
                e for e in unit.queue if e.kind not in ("upgrade-charm", "config-changed")
            ]
            unit.queue[0:0] = [Event("upgrade-charm"), Event("config-changed")]

    # -- internals: time and secrets' timed hooks -----------------------------------------------

    def _next_due(self) -> float | None:
        """The model time of the next update-status or secret deadline, if any."""
        times = [
            u.next_update_status
            for u in self.world.units.values()
            if u.next_update_status is not None and not u.dying
        ]
        for record in self.world.secrets.values():
            if record.next_rotate is not None and record.rotating is None:
                times.append(record.next_rotate)
            times += record.expiry.values()
        return min(times) if times else None

    def _fire_due(self, stretch: float) -> None:
        """Queue every update-status and secret hook due by now."""
        w = self.world
        for unit in sorted(w.units.values(), key=lambda u: u.name):
            due = unit.next_update_status
            if due is None or unit.dying or due > w.clock:
                continue
            self._queue(unit, Event("update-status"))
            unit.next_update_status = w.clock + self._update_status_interval(stretch)
        for record in list(w.secrets.values()):
            owner = self._secret_owner_unit(record)
            due = record.next_rotate
            if due is not None and record.rotating is None and due <= w.clock:
                if owner is None:  # no leader to run it yet: try again shortly
                    record.next_rotate = w.clock + SECRET_RETRY_DELAY
                else:
                    record.rotating = (due, record.latest)
                    record.next_rotate = None
                    self._queue(owner, Event("secret-rotate", secret=record.id))
            for revision, due in sorted(record.expiry.items()):
                if due > w.clock:
                    continue
                if revision not in record.revisions:
                    del record.expiry[revision]
                    continue
                # Juju repeats secret-expired until the owner removes the revision.
                record.expiry[revision] = due + SECRET_RETRY_DELAY
                if owner is not None:
                    self._queue(
                        owner, Event("secret-expired", secret=record.id, revision=revision)
                    )

    def _observable(self) -> str:
        """What an idle update-status round must leave unchanged (see ``wait``)."""
        w = self.world
        return json.dumps(
            [
                [[r.app_data, r.unit_data] for r in w.relations.values()],
                [[s.revisions, s.latest, s.tracked] for s in w.secrets.values()],
                [[u.name, u.status, u.error, u.workload_version] for u in w.units.values()],
                [[a.leader, a.status] for a in w.apps.values()],
            ],
            sort_keys=True,
            default=str,
        )

    # -- internals: building the world --------------------------------------------------------

    def _app(self, name: str) -> App:
        try:
            return self.world.apps[name]
        except KeyError:
            raise ModelError(f"no application {name}") from None

    def _new_relation(
        self,
        endpoints: dict[str, str],
        interface: str,
        *,
        peer: bool = False,
        container: bool = False,
    ) -> Relation:
        w = self.world
        rel = Relation(
            id=w.next_relation, endpoints=endpoints, interface=interface, container=container
        )
        rel.peer = peer
        w.next_relation += 1
        w.relations[rel.id] = rel
        return rel

    def _new_machine(self) -> Machine:
        w = self.world
        mid = w.next_machine
        w.next_machine += 1
        if "block" in w.network:
            a = machine_addresses(int(w.network["block"]), mid)
            machine = Machine(
                id=mid,
                hostname=f"machine-{mid}",
                address=a.ingress,
                bind=a.bind,
                public=a.public,
                loopback=a.loopback,
            )
        else:  # a model saved before ranges: one address for everything
            machine = Machine(id=mid, hostname=f"machine-{mid}", address=machine_address(mid))
        w.machines[mid] = machine
        self.machine_root(mid).mkdir(parents=True, exist_ok=True)
        return machine

    def _add_unit(self, app_name: str, principal: Unit | None = None) -> Unit:
        app = self.world.apps[app_name]
        machine = self.world.machines[principal.machine] if principal else self._new_machine()
        unit = Unit(
            name=f"{app_name}/{app.next_unit}",
            app=app_name,
            machine=machine.id,
            principal=principal.name if principal else None,
            counters=dict.fromkeys(COUNTERS, 0),
        )
        app.next_unit += 1
        self.world.units[unit.name] = unit
        unit.queue.append(Event("install"))
        for rel in self.world.relations.values():
            if self._in_relation(unit, rel):
                rel.unit_data[unit.name] = self._juju_keys(unit)
                unit.queue.append(Event("relation-created", relation=rel.id))
        unit.queue += [Event("config-changed"), Event("start")]
        if app.leader is None and not self._claim_pending(app_name):
            self._queue_first_election(unit)
        # A subordinate unit is made when its principal enters the container relation's
        # scope (_enter_scope), not with the principal.
        return unit

    def _begin_removal(self, unit: Unit) -> None:
        """Start a unit's departure: others see it depart; it departs, breaks, stops, goes."""
        unit.dying = True
        unit.queue = []
        # A dying leader stays leader through its own teardown hooks (Juju's lease outlives
        # them); the survivors elect once it is gone (_finish_removal). A first election this
        # unit had not yet run goes to a survivor now.
        self._elect(unit.app)
        if unit.counters.get("hooks", 0) == 0:  # never installed: nothing to run
            self._finish_removal(unit)
            return
        for other in self.world.units.values():
            if not other.dying:  # hooks about the leaving unit that have not run never will
                other.queue = [e for e in other.queue if e.remote != unit.name]
        for rel_id in sorted(unit.scopes):
            rel = self.world.relations[rel_id]
            for other in self.world.units.values():
                joined = other.joined.get(rel_id, [])
                if unit.name in joined and not other.dying:
                    self._queue(
                        other,
                        Event(
                            "relation-departed",
                            relation=rel_id,
                            remote=unit.name,
                            departing=unit.name,
                        ),
                    )
            for remote in sorted(unit.joined.get(rel_id, [])):
                unit.queue.append(
                    Event(
                        "relation-departed",
                        relation=rel_id,
                        remote=remote,
                        departing=unit.name,
                    )
                )
            unit.queue.append(Event("relation-broken", relation=rel.id))
        unit.queue += [Event("stop"), Event("remove")]

    def _finish_removal(self, unit: Unit) -> None:
        w = self.world
        del w.units[unit.name]
        for action_id in unit.actions:  # Juju's cleanupRemovedUnit cancels what never ran
            if action_id in w.actions:
                w.actions[action_id].update(status="cancelled", message="unit removed")
        unit.actions = []
        for rel in w.relations.values():
            rel.unit_data.pop(unit.name, None)
        for other in w.units.values():
            for joined in other.joined.values():
                if unit.name in joined:
                    joined.remove(unit.name)
        for sid in [s.id for s in w.secrets.values() if s.owner == unit.name]:
            del w.secrets[sid]
        for secret in w.secrets.values():
            secret.tracked.pop(unit.name, None)
            secret.labels.pop(unit.name, None)
        if not any(u.machine == unit.machine for u in w.units.values()):
            self._stop_machine_processes(unit.machine)
            shutil.rmtree(self.machine_root(unit.machine).parent, ignore_errors=True)
            del w.machines[unit.machine]
        app = w.apps.get(unit.app)
        if app is not None and app.leader == unit.name:
            app.leader = None
        self._elect(unit.app)
        self._check_secret_triggers()

    def _stop_machine_processes(self, machine_id: int) -> list[str]:
        stop_forwarders(self.directory / "network" / str(machine_id))
        state_dir = self.machine_root(machine_id) / "var/lib/kaji/processes"
        if not state_dir.is_dir():
            return []
        manager = ProcessManager(state_dir, stop_timeout=5.0)
        return [name for name in manager.list() if manager.stop(name)]


_MISSING = object()


#: Idle model time (seconds) before ``Model.wait`` spaces update-status rounds out.
_IDLE_BEFORE_STRETCH = 3600.0
#: Host counters that mean an update-status round changed the machine (see ``Model.wait``);
#: file writes alone do not (charms refresh their own records on a schedule).
_HOST_CHANGES = (
    "services_started",
    "services_restarted",
    "services_reloaded",
    "services_stopped",
    "binaries_installed",
)

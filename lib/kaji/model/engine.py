"""The offline model's engine: every unit's real charm, one Juju event at a time.

Each unit runs its charm through ops.testing (``Context``/``State``): the model builds the
State the unit would see (its config, leadership, the relations and remote data in its scope,
the secrets it may read, its machine's network), runs one hook, and takes back what the charm
changed — its databags, secrets, status, stored state — and queues the hooks Juju would run
on other units because of it. The charm's Host is a sandbox per machine
(``<model dir>/machines/<n>/root``), selected through the ``KAJI_HOST_*`` environment.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import json
import logging
import os
import random
import shutil
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kaji.model.bundle import CONFIG_TYPES, Bundle, load_bundle
from kaji.model.charms import CharmCode
from kaji.model.world import (
    LIFECYCLE,
    App,
    Event,
    Machine,
    Relation,
    SecretRecord,
    Unit,
    World,
)

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

logger = logging.getLogger(__name__)


class ModelError(Exception):
    """A request the model cannot carry out (unknown unit, bad config value, ...)."""


class NotConvergingError(ModelError):
    """The charms kept producing work: the hook budget ran out with events still pending."""

    def __init__(self, message: str, busiest: Sequence[tuple[str, int]]) -> None:
        super().__init__(message)
        self.busiest = list(busiest)


#: Short name used by the command line and the tests.
NotConverging = NotConvergingError


@dataclasses.dataclass
class RunStats:
    """What one ``settle`` did: hooks run, and per unit the counters that moved."""

    hooks: int
    seconds: float
    per_unit: dict[str, dict[str, int]]

    def total(self, counter: str) -> int:
        """Sum of one counter over every unit."""
        return sum(c.get(counter, 0) for c in self.per_unit.values())


def machine_address(machine_id: int) -> str:
    """The loopback address of machine ``n``: 127.0.1.(n+1), then 127.0.2.x, ..."""
    return f"127.0.{1 + machine_id // 254}.{1 + machine_id % 254}"


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _collect_hosts(into: list[Any]) -> Iterator[None]:
    """Collect every kaji Host built while the block runs (to read its ``stats``)."""
    from kaji.host.root import Host

    original = Host.__init__

    def init(self: Host, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        into.append(self)

    Host.__init__ = init  # type: ignore[method-assign,unused-ignore]
    try:
        yield
    finally:
        Host.__init__ = original  # type: ignore[method-assign,unused-ignore]


class _CachedYaml:
    """Stands in for the ``yaml`` module in scenario and ops while the model runs hooks.

    Every hook, scenario dumps the charm's metadata into the charm root and ops parses it
    back; the content is the same each time, so both are cached (and done with libyaml when
    present). Everything else is the real module.
    """

    def __init__(self) -> None:
        import yaml

        self._yaml = yaml
        self._dumped: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        self._dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        self._loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._yaml, name)

    def safe_dump(self, data: Any, stream: Any = None, **kwargs: Any) -> Any:
        if stream is not None or kwargs:
            return self._yaml.safe_dump(data, stream, **kwargs)
        key = json.dumps(data, sort_keys=True, default=repr)
        if key not in self._dumped:
            self._dumped[key] = self._yaml.dump(data, Dumper=self._dumper)
        return self._dumped[key]

    def safe_load(self, stream: Any) -> Any:
        if not isinstance(stream, str):
            return self._yaml.safe_load(stream)
        if stream not in self._loaded:
            self._loaded[stream] = self._yaml.load(stream, Loader=self._loader)
        return copy.deepcopy(self._loaded[stream])


_CACHED_YAML: _CachedYaml | None = None


@contextlib.contextmanager
def _fast_metadata_yaml() -> Iterator[None]:
    global _CACHED_YAML
    import ops.charm
    import scenario._runtime

    if _CACHED_YAML is None:
        _CACHED_YAML = _CachedYaml()
    saved = scenario._runtime.yaml, ops.charm.yaml
    scenario._runtime.yaml = _CACHED_YAML  # type: ignore[assignment]
    ops.charm.yaml = _CACHED_YAML  # type: ignore[assignment]
    try:
        yield
    finally:
        scenario._runtime.yaml, ops.charm.yaml = saved


class Model:
    """An offline Juju model in a directory; see the module docstring.

    Create one with ``Model.create(dir)`` (or open a saved one with ``Model.load(dir)``), then
    ``deploy``, ``add_unit``, ``remove_unit``, ``set_config``, ``set_leader``; each runs the
    hooks until nothing is pending. ``save`` writes ``model.json``; ``destroy`` stops every
    process the charms started and removes the directory.
    """

    def __init__(self, directory: Path, world: World, *, seed: int | None = None) -> None:
        self.directory = directory
        self.world = world
        # Shuffles delivery order (reproducibly from the seed); nothing secret about it.
        self.rng = random.Random(seed) if seed is not None else None  # noqa: S311
        self._code: dict[str, CharmCode] = {}
        self._cursor = 0
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
        return cls(directory, world, seed=seed)

    @classmethod
    def load(cls, directory: Path | str = DEFAULT_MODEL_DIR, *, seed: int | None = None) -> Model:
        """Open the model saved in ``directory``."""
        directory = Path(directory).absolute()
        path = directory / MODEL_FILE
        if not path.exists():
            raise ModelError(f"no model in {directory} (run deploy first)")
        world = World.from_json(json.loads(path.read_text()))
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
        shutil.rmtree(self.directory, ignore_errors=True)
        return stopped

    # -- paths --------------------------------------------------------------------------------

    def machine_root(self, machine_id: int) -> Path:
        """The sandbox root of a machine: where its rendered files are."""
        return self.directory / "machines" / str(machine_id) / "root"

    def unit_root(self, unit: str) -> Path:
        """The sandbox root of the machine a unit is on."""
        return self.machine_root(self.world.units[unit].machine)

    def log_path(self, unit: str) -> Path:
        """The unit's log: juju-log lines and hook failures."""
        return self.directory / "logs" / f"{unit.replace('/', '-')}.log"

    # -- queries ------------------------------------------------------------------------------

    def units_of(self, app: str, *, alive: bool = True) -> list[Unit]:
        """The units of ``app`` in unit-number order."""
        units = [u for u in self.world.units.values() if u.app == app]
        if alive:
            units = [u for u in units if not u.dying]
        return sorted(units, key=lambda u: u.number)

    def pending(self) -> int:
        """How many hooks are queued across all units."""
        return sum(len(u.queue) for u in self.world.units.values())

    def relation_between(self, app_a: str, app_b: str) -> Relation | None:
        """The (non-peer) relation between two applications, if any."""
        for rel in self.world.relations.values():
            if not rel.peer and {app_a, app_b} == set(rel.endpoints):
                return rel
        return None

    def peer_relation(self, app: str) -> Relation | None:
        """The application's peer relation, if its charm declares one."""
        for rel in self.world.relations.values():
            if rel.peer and app in rel.endpoints:
                return rel
        return None

    def counters(self) -> dict[str, dict[str, int]]:
        """A copy of every unit's counters."""
        return {n: dict(u.counters) for n, u in self.world.units.items()}

    # -- charm code ---------------------------------------------------------------------------

    def code(self, app: str) -> CharmCode:
        """The loaded charm of an application."""
        info = self.world.apps[app]
        if info.charm not in self._code:
            work = self.directory / "charms" / info.charm
            self._code[info.charm] = CharmCode(Path(info.source), work)
        return self._code[info.charm]

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
            from kaji.model.bundle import find_charm_sources

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
                converted[key] = _convert_option(value, str(option.get("type", "string")))
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
        if app.leader is None:
            app.leader = unit.name
            unit.queue.append(Event("leader-elected"))
        unit.queue += [Event("config-changed"), Event("start")]
        if principal is None:
            for rel in self.world.relations.values():
                if rel.container and app_name in rel.endpoints:
                    sub = rel.other_app(app_name)
                    if self.world.apps[sub].subordinate:
                        self._add_unit(sub, principal=unit)
        return unit

    def _juju_keys(self, unit: Unit) -> dict[str, str]:
        address = self.world.machines[unit.machine].address
        return {
            "egress-subnets": f"{address}/32",
            "ingress-address": address,
            "private-address": address,
        }

    def _in_relation(self, unit: Unit, rel: Relation) -> bool:
        """Whether the unit takes part in the relation (subordinates: only with its principal)."""
        if unit.app not in rel.endpoints:
            return False
        if rel.container and unit.principal is not None:
            return self.world.units[unit.principal].app in rel.endpoints
        return True

    def _visible(self, unit: Unit, other: Unit, rel: Relation) -> bool:
        """Whether ``other`` is a remote unit of ``unit`` in the relation (both in scope)."""
        if other.name == unit.name or other.dying or rel.id not in other.scopes:
            return False
        if not self._in_relation(other, rel):
            return False
        if rel.peer:
            return other.app == unit.app
        if other.app == unit.app:
            return False
        if rel.container:
            return other.machine == unit.machine
        return True

    def _queue(self, unit: Unit, event: Event) -> None:
        if unit.dying and event.kind not in ("relation-departed", "relation-broken", "stop"):
            return
        if event.kind != "relation-joined" and event in unit.queue:
            return  # Juju coalesces: a pending hook already sees the newest data
        unit.queue.append(event)

    def _begin_removal(self, unit: Unit) -> None:
        """Start a unit's departure: others see it depart; it departs, breaks, stops, goes."""
        unit.dying = True
        unit.queue = []
        app = self.world.apps[unit.app]
        if app.leader == unit.name:
            successors = self.units_of(unit.app)
            app.leader = successors[0].name if successors else None
            if successors:
                self._queue(successors[0], Event("leader-elected"))
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

    def _stop_machine_processes(self, machine_id: int) -> list[str]:
        from kaji.host.processes import ProcessManager

        state_dir = self.machine_root(machine_id) / "var/lib/kaji/processes"
        if not state_dir.is_dir():
            return []
        manager = ProcessManager(state_dir, stop_timeout=5.0)
        return [name for name in manager.list() if manager.stop(name)]

    # -- the loop -----------------------------------------------------------------------------

    def settle(self, max_hooks: int | None = None) -> RunStats:
        """Run hooks until none is pending; raise NotConvergingError when the budget runs out.

        Units whose last hook failed are retried once, then left in error (like
        ``juju resolve --no-retry`` was never run).
        """
        alive = sum(1 for u in self.world.units.values() if not u.dying)
        # Peers join pairwise: n units of one application inherently cost O(n^2) hooks.
        budget = max_hooks if max_hooks is not None else 400 + 60 * alive + 4 * alive**2
        for unit in self.world.units.values():
            unit.error = None
        before = self.counters()
        started = time.perf_counter()
        ran = 0
        per_unit: collections.Counter[str] = collections.Counter()
        while (picked := self._pick()) is not None:
            unit, index = picked
            if ran >= budget:
                busiest = per_unit.most_common(5)
                recent = "; ".join(f"{u}: {e}" for u, e in list(self.history)[-12:])
                raise NotConvergingError(
                    f"the model did not converge within {budget} hooks "
                    f"({self.pending()} still pending); busiest units: "
                    + ", ".join(f"{u} ({n} hooks)" for u, n in busiest)
                    + f"; last hooks: {recent}",
                    busiest,
                )
            ran += 1
            per_unit[unit.name] += 1
            self._run(unit, index)
        after = self.counters()
        moved = {
            name: {k: v - before.get(name, {}).get(k, 0) for k, v in counters.items()}
            for name, counters in after.items()
        }
        return RunStats(ran, time.perf_counter() - started, moved)

    def _pick(self) -> tuple[Unit, int] | None:
        ready = [u for u in self.world.units.values() if u.queue and u.error is None]
        if not ready:
            return None
        if self.rng is None:
            names = sorted(self.world.units)
            ready_names = {u.name for u in ready}
            for step in range(len(names)):
                name = names[(self._cursor + step) % len(names)]
                if name in ready_names:
                    self._cursor = (names.index(name) + 1) % len(names)
                    return self.world.units[name], 0
            return None
        unit = self.rng.choice(sorted(ready, key=lambda u: u.name))
        eligible = [
            i
            for i, event in enumerate(unit.queue)
            if not any(earlier.conflicts(event) for earlier in unit.queue[:i])
        ]
        return unit, self.rng.choice(eligible)

    # -- running one hook ---------------------------------------------------------------------

    def _run(self, unit: Unit, index: int) -> None:
        from scenario.errors import UncaughtCharmError

        event = unit.queue[index]
        rel = self.world.relations.get(event.relation) if event.relation is not None else None
        if event.kind == "relation-joined" and rel is not None and event.remote:
            joined = unit.joined.setdefault(rel.id, [])
            if event.remote not in joined:
                joined.append(event.remote)
        if event.kind == "relation-departed" and rel is not None and event.remote:
            joined = unit.joined.get(rel.id, [])
            if event.remote in joined:
                joined.remove(event.remote)
        code = self.code(unit.app)
        state, handles = self._state_for(unit, event)
        ctx_event = self._ops_event(unit, event, state, handles, code)
        if ctx_event is None:  # nothing left to deliver (e.g. the secret is gone)
            unit.queue.pop(index)
            return
        machine = self.world.machines[unit.machine]
        env = {
            "KAJI_HOST_ROOT": str(self.machine_root(machine.id)),
            "KAJI_HOST_HOSTNAME": machine.hostname,
            "KAJI_HOST_LOOPBACK": machine.address,
            "KAJI_HOST_PROCESSES": "1" if self.world.processes else "0",
        }
        hosts: list[Any] = []
        from ops import testing

        ctx = testing.Context(
            code.charm_type,
            meta=code.metadata,
            config=code.config,
            actions=code.actions,
            charm_root=code.root,
            app_name=unit.app,
            unit_id=unit.number,
            machine_id=str(machine.id),
            principal_unit=unit.principal,
        )
        self.history.append((unit.name, event))
        unit.counters["hooks"] += 1
        unit.hooks_by_kind[event.kind] = unit.hooks_by_kind.get(event.kind, 0) + 1
        try:
            with _environment(env), _collect_hosts(hosts), _fast_metadata_yaml(), code.imports():
                out = ctx.run(ctx_event, state)
        except UncaughtCharmError as e:
            cause = e.__cause__ or e
            unit.error = f'hook failed: "{event.kind}": {type(cause).__name__}: {cause}'
            unit.counters["errors"] += 1
            self._log(unit, ctx, event, "".join(traceback.format_exception(cause)))
            return
        finally:
            self._add_host_stats(unit, hosts)
            ctx.close()
        self._log(unit, ctx, event, None)
        unit.queue.pop(index)
        self._absorb(unit, event, state, out)
        if event.kind == "relation-created" and rel is not None:
            self._enter_scope(unit, rel)
        if event.kind == "relation-broken" and rel is not None:
            if rel.id in unit.scopes:
                unit.scopes.remove(rel.id)
            unit.joined.pop(rel.id, None)
        if event.kind == "remove":
            self._finish_removal(unit)

    def _add_host_stats(self, unit: Unit, hosts: list[Any]) -> None:
        for host in hosts:
            for key, value in host.stats.as_dict().items():
                unit.counters[key] = unit.counters.get(key, 0) + value

    def _log(self, unit: Unit, ctx: Any, event: Event, failure: str | None) -> None:
        path = self.log_path(unit.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"== {event}"]
        lines += [f"{line.level} {line.message}" for line in ctx.juju_log if line.level != "DEBUG"]
        if failure:
            lines.append(f"ERROR hook failed:\n{failure}")
        with path.open("a") as f:
            f.write("\n".join(lines) + "\n")

    def _enter_scope(self, unit: Unit, rel: Relation) -> None:
        if rel.id in unit.scopes:
            return
        unit.scopes.append(rel.id)
        for other in sorted(self.world.units.values(), key=lambda u: u.name):
            if self._visible(unit, other, rel):
                self._queue(unit, Event("relation-joined", relation=rel.id, remote=other.name))
                self._queue(unit, Event("relation-changed", relation=rel.id, remote=other.name))
                self._queue(other, Event("relation-joined", relation=rel.id, remote=unit.name))
                self._queue(other, Event("relation-changed", relation=rel.id, remote=unit.name))

    # -- State in ----------------------------------------------------------------------------

    def _state_for(self, unit: Unit, event: Event) -> tuple[Any, dict[str, Any]]:
        from ops import testing

        w = self.world
        app = w.apps[unit.app]
        code = self.code(unit.app)
        machine = w.machines[unit.machine]
        relations: list[Any] = []
        handles: dict[str, Any] = {}
        for rel in w.relations.values():
            current = event.relation == rel.id
            if rel.id not in unit.scopes and not (current and event.kind == "relation-created"):
                continue
            endpoint = rel.endpoints[unit.app]
            local_app = dict(rel.app_data.get(unit.app, {}))
            local_unit = dict(rel.unit_data.get(unit.name) or self._juju_keys(unit))
            broken = current and event.kind == "relation-broken"
            joined = [] if broken else sorted(unit.joined.get(rel.id, []))
            if rel.peer:
                relations.append(
                    testing.PeerRelation(
                        endpoint,
                        rel.interface,
                        id=rel.id,
                        local_app_data=local_app,
                        local_unit_data=local_unit,
                        peers_data={
                            w.units[n].number: dict(rel.unit_data.get(n, {})) for n in joined
                        },
                    )
                )
                continue
            remote_app = rel.other_app(unit.app)
            if rel.container:
                partner = self._partner(unit, rel)
                if partner is None:
                    continue
                visible = partner.name in joined
                relations.append(
                    testing.SubordinateRelation(
                        endpoint,
                        rel.interface,
                        id=rel.id,
                        local_app_data=local_app,
                        local_unit_data=local_unit,
                        remote_app_name=remote_app,
                        remote_unit_id=partner.number,
                        remote_app_data=dict(rel.app_data.get(remote_app, {})),
                        remote_unit_data=dict(
                            rel.unit_data.get(partner.name, {})
                            if visible
                            else self._juju_keys(partner)
                        ),
                    )
                )
                continue
            limit = code.endpoint(endpoint).get("limit")
            extra: dict[str, Any] = {"limit": int(limit)} if limit else {}
            relations.append(
                testing.Relation(
                    endpoint,
                    rel.interface,
                    id=rel.id,
                    local_app_data=local_app,
                    local_unit_data=local_unit,
                    remote_app_name=remote_app,
                    remote_app_data=dict(rel.app_data.get(remote_app, {})),
                    remote_units_data={
                        w.units[n].number: dict(rel.unit_data.get(n, {}))
                        for n in joined
                        if n in w.units
                    },
                    **extra,
                )
            )
        secrets = []
        for record in w.secrets.values():
            secret = self._secret_view(unit, record)
            if secret is not None:
                secrets.append(secret)
                handles[record.id] = secret
        address = machine.address
        bindings = ["juju-info"] + [
            name
            for role in ("provides", "requires", "peers")
            for name, spec in (code.meta.get(role) or {}).items()
            if (spec or {}).get("scope") != "container"
        ]
        networks = [
            testing.Network(
                name,
                [testing.BindAddress([testing.Address(address, cidr=f"{address}/32")])],
                ingress_addresses=[address],
                egress_subnets=[f"{address}/32"],
            )
            for name in bindings
        ]
        state = testing.State(
            config=dict(app.config),
            relations=relations,
            networks=networks,
            leader=app.leader == unit.name,
            model=testing.Model(name="kaji", uuid=w.uuid),
            secrets=secrets,
            planned_units=len(self.units_of(unit.app)),
            deferred=[testing.DeferredEvent(**d) for d in unit.deferred],
            stored_states=[
                testing.StoredState(
                    s["name"],
                    owner_path=s["owner_path"],
                    content=s["content"],
                    _data_type_name=s["data_type_name"],
                )
                for s in unit.stored_states
            ],
            unit_status=_status(unit.status),
            app_status=_status(app.status),
            workload_version=unit.workload_version,
        )
        return state, handles

    def _partner(self, unit: Unit, rel: Relation) -> Unit | None:
        """The unit on the other side of a container-scoped relation on the same machine."""
        other_app = rel.other_app(unit.app)
        for other in self.world.units.values():
            if other.app == other_app and other.machine == unit.machine:
                return other
        return None

    def _secret_view(self, unit: Unit, record: SecretRecord) -> Any:
        from ops import testing

        w = self.world
        if record.owner_is_app and record.owner == unit.app:
            owner: str | None = "app"
            label = record.labels.get(unit.app)
        elif record.owner == unit.name:
            owner = "unit"
            label = record.labels.get(unit.name)
        elif self._granted(unit, record):
            owner = None
            label = record.labels.get(unit.name)
        else:
            return None
        tracked = record.tracked.get(unit.name, record.latest)
        grants: dict[int, list[str]] = {
            rid: sorted(names) for rid, names in record.grants.items() if rid in w.relations
        }
        secret = testing.Secret(
            record.revisions[tracked],
            latest_content=record.revisions[record.latest],
            id=record.id,
            owner=owner,  # type: ignore[arg-type]
            remote_grants=grants if owner else {},
            label=label,
            description=record.description,
        )
        object.__setattr__(secret, "_tracked_revision", tracked)
        object.__setattr__(secret, "_latest_revision", record.latest)
        return secret

    def _granted(self, unit: Unit, record: SecretRecord) -> bool:
        for rid, grantees in record.grants.items():
            rel = self.world.relations.get(rid)
            if rel is None or not self._in_relation(unit, rel):
                continue
            if unit.name in grantees or unit.app in grantees:
                return True
        return False

    def _ops_event(
        self, unit: Unit, event: Event, state: Any, handles: Mapping[str, Any], code: CharmCode
    ) -> Any:
        from scenario.context import CharmEvents

        k = event.kind
        if k in LIFECYCLE:
            return getattr(CharmEvents, k.replace("-", "_"))()
        if k == "secret-changed":
            secret = handles.get(event.secret or "")
            return CharmEvents.secret_changed(secret) if secret is not None else None
        relation = next((r for r in state.relations if r.id == event.relation), None)
        if relation is None:
            return None
        remote = self.world.units.get(event.remote) if event.remote else None
        remote_id = remote.number if remote else _number(event.remote)
        if k == "relation-created":
            return CharmEvents.relation_created(relation)
        if k == "relation-broken":
            return CharmEvents.relation_broken(relation)
        if k == "relation-joined":
            return CharmEvents.relation_joined(relation, remote_unit=remote_id)
        if k == "relation-changed":
            if remote_id is None:
                remote_ids = list(relation._remote_unit_ids)
                if not remote_ids:
                    return None  # no one to hear of it yet; the first joined shows the data
                remote_id = remote_ids[0]
            return CharmEvents.relation_changed(relation, remote_unit=remote_id)
        if k == "relation-departed":
            return CharmEvents.relation_departed(
                relation, remote_unit=remote_id, departing_unit=_number(event.departing)
            )
        raise ModelError(f"unknown hook {k}")

    # -- State out ---------------------------------------------------------------------------

    def _absorb(self, unit: Unit, event: Event, state_in: Any, out: Any) -> None:
        w = self.world
        app = w.apps[unit.app]
        leader = app.leader == unit.name
        unit.status = (out.unit_status.name, out.unit_status.message)
        if leader:
            app.status = (out.app_status.name, out.app_status.message)
        unit.workload_version = out.workload_version
        unit.stored_states = [
            {
                "name": s.name,
                "owner_path": s.owner_path,
                "content": dict(s.content),
                "data_type_name": s._data_type_name,
            }
            for s in out.stored_states
        ]
        unit.deferred = [dataclasses.asdict(d) for d in out.deferred]
        unit.counters["deferred"] += len(out.deferred)
        for relation in out.relations:
            rel = w.relations.get(relation.id)
            if rel is None:
                continue
            self._absorb_relation(unit, rel, relation, leader)
        self._absorb_secrets(unit, state_in, out, leader)

    def _absorb_relation(self, unit: Unit, rel: Relation, relation: Any, leader: bool) -> None:
        w = self.world
        new_unit = {k: v for k, v in relation.local_unit_data.items()}
        old_unit = rel.unit_data.get(unit.name, {})
        if new_unit != old_unit and not unit.dying:
            rel.unit_data[unit.name] = new_unit
            for other in w.units.values():
                if unit.name in other.joined.get(rel.id, []):
                    self._queue(
                        other, Event("relation-changed", relation=rel.id, remote=unit.name)
                    )
        new_app = dict(relation.local_app_data)
        old_app = rel.app_data.get(unit.app, {})
        if leader and new_app != old_app:
            rel.app_data[unit.app] = new_app
            for other in w.units.values():
                if other.name == unit.name or rel.id not in other.scopes:
                    continue
                if other.app != rel.other_app(unit.app) and not rel.peer:
                    continue
                if rel.peer and other.app != unit.app:
                    continue
                if rel.container and other.machine != unit.machine:
                    continue
                self._queue(other, Event("relation-changed", relation=rel.id))

    def _absorb_secrets(self, unit: Unit, state_in: Any, out: Any, leader: bool) -> None:
        w = self.world
        seen = set()
        for secret in out.secrets:
            sid = secret.id
            seen.add(sid)
            record = w.secrets.get(sid)
            if record is None:  # created in this hook
                owner_is_app = secret.owner == "app"
                record = SecretRecord(
                    id=sid,
                    owner=unit.app if owner_is_app else unit.name,
                    owner_is_app=owner_is_app,
                    revisions={1: dict(secret.latest_content)},
                    description=secret.description,
                    grants={k: sorted(v) for k, v in secret.remote_grants.items()},
                )
                if secret.label:
                    record.labels[record.owner] = secret.label
                record.tracked[unit.name] = 1
                w.secrets[sid] = record
                continue
            manager = (record.owner_is_app and record.owner == unit.app and leader) or (
                record.owner == unit.name
            )
            observer = record.owner if secret.owner else unit.name
            if secret.label and record.labels.get(observer) != secret.label:
                record.labels[observer] = secret.label
            if manager:
                if dict(secret.latest_content) != record.revisions[record.latest]:
                    record.latest += 1
                    record.revisions[record.latest] = dict(secret.latest_content)
                    self._secret_changed(record, unit)
                record.grants = {k: sorted(v) for k, v in secret.remote_grants.items() if v}
                if secret.description is not None:
                    record.description = secret.description
            for rev, content in record.revisions.items():
                if content == dict(secret.tracked_content):
                    record.tracked[unit.name] = rev
        for secret in state_in.secrets:
            record = w.secrets.get(secret.id)
            if secret.id in seen or record is None:
                continue
            manager = (record.owner_is_app and record.owner == unit.app and leader) or (
                record.owner == unit.name
            )
            if manager:
                del w.secrets[secret.id]

    def _secret_changed(self, record: SecretRecord, writer: Unit) -> None:
        """Tell every consumer tracking an older revision (owners get no secret-changed)."""
        for name, revision in record.tracked.items():
            consumer = self.world.units.get(name)
            if consumer is None or consumer.name == writer.name or revision >= record.latest:
                continue
            if record.owner in (consumer.app, consumer.name):
                continue
            self._queue(consumer, Event("secret-changed", secret=record.id))


_MISSING = object()


def _number(unit: str | None) -> int | None:
    return None if unit is None else int(unit.rsplit("/", 1)[1])


def _status(status: tuple[str, str]) -> Any:
    from ops import testing

    name, message = status
    classes = {
        "active": testing.ActiveStatus,
        "blocked": testing.BlockedStatus,
        "waiting": testing.WaitingStatus,
        "maintenance": testing.MaintenanceStatus,
        "error": testing.ErrorStatus,
    }
    if name in classes:
        return classes[name](message)
    return testing.UnknownStatus()


def _convert_option(value: Any, kind: str) -> Any:
    """A config value of the declared type (command-line strings are converted)."""
    if isinstance(value, str) and kind != "string" and kind != "secret":
        text = value.strip()
        if kind == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{value!r} is not an int") from None
        if kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a float") from None
        if kind == "boolean":
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
    expected = CONFIG_TYPES.get(kind, (str,))
    if isinstance(value, bool) and bool not in expected:
        raise ValueError(f"must be {kind}, got {json.dumps(value)}")
    if not isinstance(value, expected):
        raise ValueError(f"must be {kind}, got {json.dumps(value)}")
    return value

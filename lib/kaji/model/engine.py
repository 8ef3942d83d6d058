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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kaji import clock
from kaji.model.bundle import CONFIG_TYPES, Bundle, load_bundle
from kaji.model.charms import CharmCode
from kaji.model.hooktools import count_hook_tools
from kaji.model.network import container_bindings
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
#: Juju's default update-status-hook-interval (environs/config DefaultUpdateStatusHookInterval).
UPDATE_STATUS_INTERVAL = 300.0
#: Juju's RotateRetryDelay and ExpireRetryDelay (core/secrets/rotate.go).
SECRET_RETRY_DELAY = 300.0
#: The longest gap ``wait`` leaves between update-status rounds while nothing changes.
DEFAULT_MAX_GAP_MINUTES = 24 * 60.0

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
        from kaji.model.network import NetworkError, claim_range, network_range

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
        from kaji.model.network import release_range, stop_forwarders

        for forwarders in (self.directory / "network").glob("*"):
            stop_forwarders(forwarders)
        shutil.rmtree(self.directory, ignore_errors=True)
        if "block" in self.world.network:
            release_range(int(self.world.network["block"]), self.directory)
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
        key = (info.charm, info.source, info.revision)
        if key not in self._code:
            name = info.charm if info.revision == 0 else f"{info.charm}@{info.revision}"
            self._code[key] = CharmCode(Path(info.source), self.directory / "charms" / name)
        return self._code[key]

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
        from kaji.model.charms import CharmLoadError

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

    def _update_status_interval(self, stretch: float = 1.0) -> float:
        """The time to a unit's next update-status (Juju randomises it by ±20%)."""
        jitter = 0.8 + 0.4 * self.rng.random() if self.rng is not None else 1.0
        return UPDATE_STATUS_INTERVAL * stretch * jitter

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

    def _secret_owner_unit(self, record: SecretRecord) -> Unit | None:
        """The unit that runs the owner's secret hooks: the owner unit or the app's leader.

        None while there is none able to (dying, not installed, no leader): Juju runs no
        secret hook on a dying unit.
        """
        w = self.world
        if record.owner_is_app:
            app = w.apps.get(record.owner)
            name = app.leader if app is not None else None
        else:
            name = record.owner
        unit = w.units.get(name) if name else None
        if unit is None or unit.dying or not unit.hooks_by_kind.get("install"):
            return None
        return unit

    def _check_secret_triggers(self) -> None:
        """Queue secret-remove for each revision no consumer tracks any more, on its owner."""
        for record in self.world.secrets.values():
            owner = self._secret_owner_unit(record)
            if owner is None:
                continue
            app_of = {n: n.rsplit("/", 1)[0] for n in record.tracked}
            tracked = {
                rev
                for name, rev in record.tracked.items()
                if not (
                    app_of[name] == record.owner if record.owner_is_app else name == record.owner
                )
            }
            for revision in sorted(record.revisions):
                if revision == record.latest or revision in tracked:
                    continue
                if revision in record.obsolete_done:
                    continue
                event = Event("secret-remove", secret=record.id, revision=revision)
                self._queue(owner, event)

    def _after_secret_hook(self, event: Event) -> None:
        """Book-keeping once an owner's secret hook has run."""
        record = self.world.secrets.get(event.secret or "")
        if record is None:
            return
        if event.kind == "secret-rotate" and record.rotating is not None:
            due, revision = record.rotating
            record.rotating = None
            if record.rotate:
                # Juju: next rotation one period after the last due time when a new revision
                # was made, else retry after RotateRetryDelay.
                rotated = record.latest > revision
                record.next_rotate = (
                    _next_rotate(record.rotate, due) if rotated else due + SECRET_RETRY_DELAY
                )
        removed, done = event.revision, record.obsolete_done
        if event.kind == "secret-remove" and removed is not None and removed not in done:
            done.append(removed)

    def _apply_removed_revisions(self, removed: Sequence[tuple[str, int]]) -> None:
        """Drop the secret revisions a hook removed (secret-remove / remove_revision)."""
        for secret_id, revision in removed:
            record = self.world.secrets.get(secret_id)
            if record is None or revision == record.latest:
                continue
            record.revisions.pop(revision, None)
            record.expiry.pop(revision, None)
            record.expires.pop(revision, None)
            for name, tracked in list(record.tracked.items()):
                if tracked == revision:
                    del record.tracked[name]

    # -- internals: leadership ------------------------------------------------------------------

    def _claim_pending(self, app_name: str) -> bool:
        """Whether a live unit of the application is about to run its first leader-elected."""
        return any(
            u.app == app_name and not u.dying and Event("leader-elected") in u.queue
            for u in self.world.units.values()
        )

    def _queue_first_election(self, unit: Unit) -> None:
        """Queue an application's first leader-elected on the unit.

        Juju runs leader-elected only once the unit is installed; its leadership tracker may
        claim the lease when the agent starts (is-leader true even in install) or later.
        Without a seed: leader-elected after install and relation-created, leadership taken
        as it runs. With a seed: after any of the unit's first hooks, taken early or late.
        """
        position = unit.queue.index(Event("config-changed"))
        if self.rng is not None:
            position = self.rng.randint(1, len(unit.queue))
            if self.rng.random() < 0.5:
                self.world.apps[unit.app].leader = unit.name
        unit.queue.insert(position, Event("leader-elected"))

    def _elect(self, app_name: str) -> None:
        """Elect a leader among the application's live units when it has none, nor a claim.

        Without a seed the lowest-numbered unit wins; with a seed, any of them.
        """
        app = self.world.apps.get(app_name)
        if app is None or app.leader is not None or self._claim_pending(app_name):
            return
        candidates = self.units_of(app_name)
        if not candidates:
            return
        chosen = self.rng.choice(candidates) if self.rng is not None else candidates[0]
        app.leader = chosen.name
        self._queue(chosen, Event("leader-elected"))

    # -- internals: running one action ----------------------------------------------------------

    def _action_ready(self, unit: Unit) -> bool:
        """Whether the unit runs a queued action next (Juju: once installed, even in error)."""
        return bool(unit.actions) and bool(unit.hooks_by_kind.get("install"))

    def _run_action(self, unit: Unit) -> None:
        """Run the unit's oldest queued action, then collect-status, as ops dispatches one."""
        from ops import testing
        from scenario.errors import UncaughtCharmError

        from kaji.model.network import container_bindings

        w = self.world
        record = w.actions[unit.actions.pop(0)]
        event = Event(f"{record['name']} action")
        code = self.code(unit.app)
        state, _ = self._state_for(unit, event)
        machine = w.machines[unit.machine]
        env = self._hook_env(machine)
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
        unit.counters["actions"] = unit.counters.get("actions", 0) + 1
        hosts: list[Any] = []
        removed: list[tuple[str, int]] = []
        out: Any = None
        status, message, failure = "completed", "", None
        try:
            with (
                _environment(env),
                _collect_hosts(hosts),
                _fast_metadata_yaml(),
                code.imports(),
                container_bindings(),
                _juju_semantics(removed=removed, unjoined=self._unjoined),
            ):
                out = ctx.run(ctx.on.action(record["name"], params=record["params"]), state)
        except testing.ActionFailed as e:
            status, message, out = "failed", e.message, e.state
        except UncaughtCharmError as e:
            cause = e.__cause__ or e
            # The dispatch exits non-zero: Juju fails the action; the unit is not in error.
            status, message = "failed", "exit status 1"
            failure = "".join(traceback.format_exception(cause))
        finally:
            self._add_host_stats(unit, hosts)
            ctx.close()
        record.update(
            status=status,
            message=message,
            results=json.loads(json.dumps(ctx.action_results or {}, default=str)),
            log=list(ctx.action_logs),
        )
        self._log(unit, ctx, event, failure)
        if out is not None:
            self._absorb(unit, event, state, out)
            self._apply_removed_revisions(removed)
            self._check_secret_triggers()

    def _hook_env(self, machine: Machine) -> dict[str, str]:
        """The environment a hook or action runs with on ``machine``."""
        return {
            "KAJI_HOST_ROOT": str(self.machine_root(machine.id)),
            "KAJI_HOST_HOSTNAME": machine.hostname,
            "KAJI_HOST_LOOPBACK": machine.loopback or machine.address,
            "KAJI_HOST_PROCESSES": "1" if self.world.processes else "0",
            clock.OFFSET_ENV: repr(self.world.clock - time.time()),
        }

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
            from kaji.model.network import machine_addresses

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
        from kaji.host.processes import ProcessManager
        from kaji.model.network import stop_forwarders

        stop_forwarders(self.directory / "network" / str(machine_id))
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
            if index < 0:
                self._run_action(unit)
            else:
                self._run(unit, index)
        after = self.counters()
        moved = {
            name: {k: v - before.get(name, {}).get(k, 0) for k, v in counters.items()}
            for name, counters in after.items()
        }
        return RunStats(ran, time.perf_counter() - started, moved)

    def _pick(self) -> tuple[Unit, int] | None:
        """The next unit to run and what: an index into its queue, or -1 for its next action.

        A queued action runs before the unit's other pending hooks (Juju's uniter consults its
        actions resolver before the hook resolvers), also while a hook is in error.
        """
        ready = [
            u
            for u in self.world.units.values()
            if (u.queue and u.error is None) or self._action_ready(u)
        ]
        if not ready:
            return None
        if self.rng is None:
            names = sorted(self.world.units)
            ready_names = {u.name for u in ready}
            for step in range(len(names)):
                name = names[(self._cursor + step) % len(names)]
                if name in ready_names:
                    self._cursor = (names.index(name) + 1) % len(names)
                    unit = self.world.units[name]
                    return unit, -1 if self._action_ready(unit) else 0
            return None
        unit = self.rng.choice(sorted(ready, key=lambda u: u.name))
        if self._action_ready(unit):
            return unit, -1
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
        if event.kind == "leader-elected":
            app = self.world.apps[unit.app]
            if app.leader is None:  # the lease is taken as the hook runs
                app.leader = unit.name
            elif app.leader != unit.name:  # another unit leads by now: nothing to run
                unit.queue.pop(index)
                return
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
        env = self._hook_env(machine)
        removed: list[tuple[str, int]] = []
        no_remote = event.kind == "relation-changed" and event.remote is None
        hosts: list[Any] = []
        tools: collections.Counter[str] = collections.Counter()
        from ops import testing

        from kaji.model.network import spec_stamps

        stamps = spec_stamps(self.machine_root(machine.id))

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
            with (
                _environment(env),
                _collect_hosts(hosts),
                _fast_metadata_yaml(),
                code.imports(),
                container_bindings(),
                count_hook_tools(tools),
                _juju_semantics(
                    no_remote_unit=no_remote, removed=removed, unjoined=self._unjoined
                ),
            ):
                out = ctx.run(ctx_event, state)
        except UncaughtCharmError as e:
            cause = e.__cause__ or e
            unit.error = f'hook failed: "{event.kind}": {type(cause).__name__}: {cause}'
            unit.counters["errors"] += 1
            self._log(unit, ctx, event, "".join(traceback.format_exception(cause)))
            return
        finally:
            self._add_host_stats(unit, hosts)
            self._add_tool_counts(unit, event, tools)
            ctx.close()
        problems = self._address_problems(unit, out, stamps)
        if problems:  # works on a flat network, fails behind NAT: fail the hook
            unit.error = f'hook failed: "{event.kind}": ' + "; ".join(problems)
            unit.counters["errors"] += 1
            self._log(unit, ctx, event, "\n".join(problems))
            return
        self._log(unit, ctx, event, None)
        unit.queue.pop(index)
        self._absorb(unit, event, state, out)
        if event.kind == "relation-created" and rel is not None:
            self._enter_scope(unit, rel)
        if event.kind == "relation-broken" and rel is not None:
            if rel.id in unit.scopes:
                unit.scopes.remove(rel.id)
            unit.joined.pop(rel.id, None)
        self._apply_removed_revisions(removed)
        if event.kind == "install" and unit.next_update_status is None:
            unit.next_update_status = self.world.clock + self._update_status_interval()
        if event.kind in ("secret-rotate", "secret-remove"):
            self._after_secret_hook(event)
        if event.kind == "remove":
            self._finish_removal(unit)
        else:
            self._check_secret_triggers()

    def _add_tool_counts(self, unit: Unit, event: Event, tools: collections.Counter[str]) -> None:
        """Add one hook's hook-tool calls to the unit's counters (see kaji.model.hooktools)."""
        calls = sum(tools.values())
        unit.counters["hook_tools"] = unit.counters.get("hook_tools", 0) + calls
        unit.counters["hook_tools_max"] = max(unit.counters.get("hook_tools_max", 0), calls)
        for tool, n in tools.items():
            unit.counters[f"tool:{tool}"] = unit.counters.get(f"tool:{tool}", 0) + n
        self.tool_log.append((unit.name, event.kind, calls))

    def addresses(self, machine: Machine) -> Any:
        """The machine's bind, ingress, public and loopback addresses."""
        from kaji.model.network import MachineAddresses

        if not machine.bind:  # a model saved before ranges
            return MachineAddresses(*[machine.address] * 4)
        return MachineAddresses(machine.bind, machine.address, machine.public, machine.loopback)

    def _address_problems(self, unit: Unit, out: Any, stamps: Mapping[str, int]) -> list[str]:
        """What in this hook works on a flat network only (see kaji.model.network).

        Services are the unit's own: those whose state a hook of this unit wrote (remembered
        as ``service:<name>`` counters), not its principal's or subordinate's.
        """
        from kaji.model import network

        machine = self.world.machines[unit.machine]
        root = self.machine_root(machine.id)
        for name, stamp in network.spec_stamps(root).items():
            if stamps.get(name) != stamp:
                unit.counters[f"service:{name}"] = 1
        owned = [k.removeprefix("service:") for k in unit.counters if k.startswith("service:")]
        addresses = self.addresses(machine)
        if addresses.bind == addresses.ingress:
            return []
        leader = self.world.apps[unit.app].leader == unit.name
        bags = []
        for relation in out.relations:
            rel = self.world.relations.get(relation.id)
            if rel is None:
                continue
            bags.append((f"relation {rel} (unit data)", relation.local_unit_data))
            if leader:
                bags.append((f"relation {rel} (application data)", relation.local_app_data))
        problems = network.advertised_bind(unit.name, addresses, bags)
        problems += network.flag_problems(root, addresses, owned)
        if self.world.processes:
            from kaji.host.processes import ProcessManager

            services = ProcessManager(root / "var/lib/kaji/processes")
            pids = {
                pid: name
                for name in services.list()
                if name in owned and (pid := services.pid(name))
            }
            problems += network.sync_forwarders(
                self.directory / "network" / str(machine.id), addresses, pids
            )
        return problems

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
        w = self.world
        remote_app = rel.other_app(unit.app)
        # The principal entering the container relation's scope creates the subordinate unit
        # (Juju: RelationUnit.EnterScope's subordinateOps); it installs from there.
        if (
            rel.container
            and unit.principal is None
            and w.apps[remote_app].subordinate
            and not any(u.app == remote_app and u.principal == unit.name for u in w.units.values())
        ):
            self._add_unit(remote_app, principal=unit)
        leads = w.apps[unit.app].leader == unit.name
        if rel.app_data.get(remote_app) and not (rel.peer and leads):
            # The other side's application data is already set: relation-changed, no unit.
            self._queue(unit, Event("relation-changed", relation=rel.id))
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
        self._unjoined = set()
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
                # scenario always lists the one remote unit of a SubordinateRelation; until it
                # has joined (or before the subordinate exists) relation-list is empty, as in
                # Juju (_juju_semantics hides it).
                partner = self._partner(unit, rel)
                visible = partner is not None and partner.name in joined
                if not visible:
                    self._unjoined.add(rel.id)
                remote_data = self._juju_keys(partner) if partner is not None else {}
                if visible and partner is not None:
                    remote_data = rel.unit_data.get(partner.name, {})
                relations.append(
                    testing.SubordinateRelation(
                        endpoint,
                        rel.interface,
                        id=rel.id,
                        local_app_data=local_app,
                        local_unit_data=local_unit,
                        remote_app_name=remote_app,
                        remote_unit_id=partner.number if partner is not None else 0,
                        remote_app_data=dict(rel.app_data.get(remote_app, {})),
                        remote_unit_data=dict(remote_data),
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
        # network-get as Juju answers it: bind-addresses are the machine's own interface,
        # ingress-addresses what other units reach it at (kaji.model.network). Every endpoint,
        # container-scoped ones too, binds on the machine the unit is on (a subordinate's is
        # its principal's).
        addresses = self.addresses(machine)
        bindings = ["juju-info"] + [
            name
            for role in ("provides", "requires", "peers")
            for name, spec in (code.meta.get(role) or {}).items()
            # scenario takes no Network for a container endpoint: container_bindings()
            # answers its network-get with juju-info's (the same machine).
            if name != "juju-info" and (spec or {}).get("scope") != "container"
        ]
        bind = testing.BindAddress(
            [testing.Address(addresses.bind, cidr=f"{addresses.bind}/32")],
            interface_name="eth0",
        )
        networks = [
            testing.Network(
                name,
                [bind],
                ingress_addresses=[addresses.ingress],
                egress_subnets=[f"{addresses.ingress}/32"],
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
            resources={testing.Resource(name=n, path=p) for n, p in app.resources.items()},
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
        from ops import SecretRotate, testing

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
        # Owners read the latest revision; a consumer the one it tracks.
        tracked = record.latest if owner else record.tracked.get(unit.name, record.latest)
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
            expire=(
                datetime.fromtimestamp(record.expires[record.latest], timezone.utc)
                if owner and record.latest in record.expires
                else None
            ),
            rotate=SecretRotate(record.rotate) if owner and record.rotate else None,
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
        if k in ("secret-rotate", "secret-expired", "secret-remove"):
            secret = handles.get(event.secret or "")
            if secret is None or secret.owner is None:
                return None  # gone, or this unit no longer owns it
            if k == "secret-rotate":
                return CharmEvents.secret_rotate(secret)
            if k == "secret-expired":
                return CharmEvents.secret_expired(secret, revision=int(event.revision or 0))
            return CharmEvents.secret_remove(secret, revision=int(event.revision or 0))
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
                # The remote application's data changed: Juju runs relation-changed with no
                # remote unit, joined units or not. scenario insists on one, so it is given
                # one and _juju_semantics empties JUJU_REMOTE_UNIT.
                remote_ids = list(relation._remote_unit_ids)
                remote_id = remote_ids[0] if remote_ids else 0
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
        views_in = {s.id: s for s in state_in.secrets}
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
                record.rotate = _rotate_policy(secret.rotate)
                if record.rotate:
                    record.next_rotate = _next_rotate(record.rotate, w.clock)
                if secret.expire is not None:
                    record.expires[1] = record.expiry[1] = secret.expire.timestamp()
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
                before = views_in.get(sid)
                policy = _rotate_policy(secret.rotate)
                if policy != (_rotate_policy(before.rotate) if before is not None else None):
                    record.rotate = policy
                    record.next_rotate = _next_rotate(policy, w.clock) if policy else None
                old_expire = before.expire if before is not None else None
                if secret.expire is not None and secret.expire != old_expire:
                    expire = secret.expire.timestamp()
                    record.expires[record.latest] = record.expiry[record.latest] = expire
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


@contextlib.contextmanager
def _juju_semantics(
    *,
    no_remote_unit: bool = False,
    removed: list[tuple[str, int]] | None = None,
    unjoined: Iterable[int] = (),
) -> Iterator[None]:
    """Where scenario is kinder than Juju, or records less, while one hook or action runs.

    - relation-changed for a change of the remote application's data has no remote unit
      (JUJU_REMOTE_UNIT empty, ``event.unit`` None); scenario insists on one;
    - resource-get of a resource nothing was attached to fails (ops raises ModelError), as
      the hook tool does; scenario raises RuntimeError;
    - a removed secret revision is recorded with its secret's id (scenario keeps the number),
      and an owner may remove any revision but the latest (scenario also refuses the one it
      "tracks", which an owner does not);
    - relation-list of a container relation whose remote unit has not joined is empty.
    """
    import ops
    import scenario._runtime
    import scenario.mocking

    runtime = scenario._runtime.Runtime
    backend: Any = scenario.mocking._MockModelBackend
    saved = runtime._get_event_env, backend.resource_get, backend.secret_remove
    original_env, original_get, original_remove = saved
    original_list = backend.relation_list
    hidden = frozenset(unjoined)

    def relation_list(self: Any, relation_id: int, **kwargs: Any) -> tuple[str, ...]:
        if relation_id in hidden:
            return ()
        return tuple(original_list(self, relation_id, **kwargs))

    def get_event_env(self: Any, state: Any, event: Any, charm_root: Path) -> dict[str, str]:
        env = original_env(self, state, event, charm_root)
        if no_remote_unit:  # Juju sets it empty for an application's change
            env["JUJU_REMOTE_UNIT"] = ""
        return env

    def resource_get(self: Any, resource_name: str) -> str:
        if not any(r.name == resource_name for r in self._state.resources):
            raise ops.ModelError(
                f"ERROR could not download resource: resource {resource_name!r} has no file"
            )
        return str(original_get(self, resource_name))

    def secret_remove(self: Any, id: str, *, revision: int | None = None) -> None:
        secret = self._get_secret(id)
        if secret.owner is not None and revision == secret._tracked_revision:
            # An owner tracks nothing: Juju lets it remove any revision but the latest.
            object.__setattr__(secret, "_tracked_revision", secret._latest_revision)
        original_remove(self, id, revision=revision)
        secret_id = secret.id
        if removed is not None and revision is not None:
            removed.append((secret_id, revision))

    runtime._get_event_env = get_event_env  # type: ignore[method-assign]
    backend.resource_get = resource_get
    backend.secret_remove = secret_remove
    backend.relation_list = relation_list
    try:
        yield
    finally:
        runtime._get_event_env = original_env  # type: ignore[method-assign]
        backend.resource_get, backend.secret_remove = original_get, original_remove
        backend.relation_list = original_list


def _next_rotate(policy: str, after: float) -> float:
    """When a secret rotating by ``policy`` is next due (Juju's RotatePolicy.NextRotateTime)."""
    if policy == "hourly":
        return after + 3600
    days = {"daily": 1, "weekly": 7}.get(policy)
    if days is not None:
        return after + days * 86400
    months = {"monthly": 1, "quarterly": 3, "yearly": 12}[policy]
    moment = datetime.fromtimestamp(after, timezone.utc)
    index = moment.month - 1 + months
    first = moment.replace(year=moment.year + index // 12, month=index % 12 + 1, day=1)
    # Go's AddDate normalises an overflowing day (Jan 31 + 1 month is Mar 3 or 2): so here.
    return (first + timedelta(days=moment.day - 1)).timestamp()


def _rotate_policy(value: Any) -> str | None:
    """The rotation policy of an ops.testing Secret, None for never."""
    if value is None:
        return None
    policy = str(getattr(value, "value", value))
    return None if policy in ("", "never") else policy


def action_params(name: str, spec: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The params of action ``name`` as Juju validates them, with the schema's defaults.

    Juju turns an action's ``params`` into the ``properties`` of a JSON Schema object with
    ``additionalProperties: false`` (unless the action sets it) plus the action's other keys
    (``required``, ...), validates against it, and inserts the defaults
    (internal/charm/actions.go: ReadActionsYaml, ValidateParams, InsertDefaults).

    Raises:
        ModelError: the params do not validate.
    """
    schema: dict[str, Any] = {
        "type": "object",
        "title": name,
        "properties": dict(spec.get("params") or {}),
        "additionalProperties": False,
    }
    schema.update(
        {k: v for k, v in spec.items() if k not in ("params", "description", "parallel")}
    )
    schema.pop("execution-group", None)
    values = dict(given)
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema comes with the test tools
        jsonschema = None
    if jsonschema is not None:
        validator = jsonschema.Draft4Validator(schema)
        errors = sorted(validator.iter_errors(values), key=lambda e: list(e.path))
        if errors:
            described = [f"({'.'.join(['root', *map(str, e.path)])}): {e.message}" for e in errors]
            raise ModelError("validation failed: " + "; ".join(described))
    else:
        unknown = sorted(set(values) - set(schema["properties"]))
        if unknown and not schema.get("additionalProperties"):
            raise ModelError(f"validation failed: unknown params {', '.join(unknown)}")
    for key, prop in schema["properties"].items():
        if key not in values and isinstance(prop, Mapping) and "default" in prop:
            values[key] = copy.deepcopy(prop["default"])
    return values


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

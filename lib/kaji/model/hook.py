"""Running one hook or action: the State a unit sees in, the charm run, what it did out.

``_state_for`` builds the ops.testing State from the unit's scope, ``_ops_event`` the event,
``_run``/``_run_action`` run the charm under the ops.testing speed-ups and Juju's semantics,
and ``_absorb`` takes back databags, secrets, statuses and stored state, queueing the hooks
Juju would run elsewhere because of them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaji import clock
from kaji.host.processes import ProcessManager
from kaji.lazy import lazy_import
from kaji.model import network
from kaji.model.charms import CharmCode
from kaji.model.delivery import SECRET_RETRY_DELAY, Delivery
from kaji.model.errors import ModelError
from kaji.model.hooktools import count_hook_tools
from kaji.model.juju_semantics import UNIT_GET, juju_semantics
from kaji.model.network import container_bindings, spec_stamps
from kaji.model.speedups import collect_hosts, environment, fast_metadata_yaml
from kaji.model.values import next_rotate, ops_status, rotate_policy, unit_number
from kaji.model.world import LIFECYCLE, Event, Machine, Relation, SecretRecord, Unit

if TYPE_CHECKING:
    from ops import testing
    from scenario import context as scenario_context
    from scenario import errors as scenario_errors
else:
    testing = lazy_import("ops.testing")
    scenario_context = lazy_import("scenario.context")
    scenario_errors = lazy_import("scenario.errors")


class HookRunner(Delivery):
    """Runs hooks and actions for units (see the module docstring)."""

    _code: dict[tuple[str, str, int], CharmCode]
    _unjoined: set[int]
    tool_log: list[tuple[str, str, int]]

    def _add_unit(self, app_name: str, principal: Unit | None = None) -> Unit:
        """Add a unit to the world (``Model``)."""
        raise NotImplementedError

    def _finish_removal(self, unit: Unit) -> None:
        """Drop a unit whose remove hook ran (``Model``)."""
        raise NotImplementedError

    def code(self, app: str) -> CharmCode:
        """The loaded charm of an application."""
        info = self.world.apps[app]
        key = (info.charm, info.source, info.revision)
        if key not in self._code:
            name = info.charm if info.revision == 0 else f"{info.charm}@{info.revision}"
            self._code[key] = CharmCode(Path(info.source), self.directory / "charms" / name)
        return self._code[key]

    def _run(self, unit: Unit, index: int) -> None:
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
        stamps = spec_stamps(self.machine_root(machine.id))

        ctx = self._context(code, unit, machine)
        self.history.append((unit.name, event))
        unit.counters["hooks"] += 1
        unit.hooks_by_kind[event.kind] = unit.hooks_by_kind.get(event.kind, 0) + 1
        try:
            with self._dispatching(
                env,
                code,
                hosts,
                count_hook_tools(tools),
                juju_semantics(
                    no_remote_unit=no_remote,
                    departing=event.departing if event.kind == "relation-departed" else None,
                    removed=removed,
                    unjoined=self._unjoined,
                ),
            ):
                out = ctx.run(ctx_event, state)
        except scenario_errors.UncaughtCharmError as e:
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

    def _run_action(self, unit: Unit) -> None:
        """Run the unit's oldest queued action, then collect-status, as ops dispatches one."""
        w = self.world
        record = w.actions[unit.actions.pop(0)]
        event = Event(f"{record['name']} action")
        code = self.code(unit.app)
        state, _ = self._state_for(unit, event)
        machine = w.machines[unit.machine]
        env = self._hook_env(machine)
        ctx = self._context(code, unit, machine)
        self.history.append((unit.name, event))
        unit.counters["actions"] = unit.counters.get("actions", 0) + 1
        hosts: list[Any] = []
        removed: list[tuple[str, int]] = []
        out: Any = None
        status, message, failure = "completed", "", None
        try:
            with self._dispatching(
                env, code, hosts, juju_semantics(removed=removed, unjoined=self._unjoined)
            ):
                out = ctx.run(ctx.on.action(record["name"], params=record["params"]), state)
        except testing.ActionFailed as e:
            status, message, out = "failed", e.message, e.state
        except scenario_errors.UncaughtCharmError as e:
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

    @staticmethod
    def _context(code: CharmCode, unit: Unit, machine: Machine) -> testing.Context[Any]:
        """The ops.testing context one hook or action of ``unit`` runs in."""
        return testing.Context(
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

    @staticmethod
    @contextlib.contextmanager
    def _dispatching(
        env: Mapping[str, str],
        code: CharmCode,
        hosts: list[Any],
        *extra: contextlib.AbstractContextManager[Any],
    ) -> Iterator[None]:
        """What every hook and action dispatch runs inside, then ``extra``.

        The machine's environment, host stats, the speed-ups, the charm's own imports and the
        container bindings.
        """
        with contextlib.ExitStack() as stack:
            for manager in (
                environment(env),
                collect_hosts(hosts),
                fast_metadata_yaml(),
                code.imports(),
                container_bindings(),
                *extra,
            ):
                stack.enter_context(manager)
            yield

    def _hook_env(self, machine: Machine) -> dict[str, str]:
        """The environment a hook or action runs with on ``machine``.

        Hook tools ops has no call for are commands on PATH, as under Juju: ``unit-get``
        answers the machine's public and private (ingress) address (see ``UNIT_GET``).
        """
        tools = self.directory / "hook-tools"
        unit_get = tools / "unit-get"
        if not unit_get.exists():
            tools.mkdir(parents=True, exist_ok=True)
            unit_get.write_text(UNIT_GET)
            unit_get.chmod(0o755)
        addresses = self.addresses(machine)
        return {
            "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "KAJI_MODEL_PUBLIC_ADDRESS": addresses.public,
            "KAJI_MODEL_PRIVATE_ADDRESS": addresses.ingress,
            "KAJI_HOST_ROOT": str(self.machine_root(machine.id)),
            "KAJI_HOST_HOSTNAME": machine.hostname,
            "KAJI_HOST_LOOPBACK": machine.loopback or machine.address,
            "KAJI_HOST_PROCESSES": "1" if self.world.processes else "0",
            clock.OFFSET_ENV: repr(self.world.clock - time.time()),
        }

    def _state_for(self, unit: Unit, event: Event) -> tuple[Any, dict[str, Any]]:
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
                # Juju (juju_semantics hides it).
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
            unit_status=ops_status(unit.status),
            app_status=ops_status(app.status),
            workload_version=unit.workload_version,
            resources={testing.Resource(name=n, path=p) for n, p in app.resources.items()},
        )
        return state, handles

    def _ops_event(
        self, unit: Unit, event: Event, state: Any, handles: Mapping[str, Any], code: CharmCode
    ) -> Any:
        k = event.kind
        if k in LIFECYCLE:
            return getattr(scenario_context.CharmEvents, k.replace("-", "_"))()
        if k == "secret-changed":
            secret = handles.get(event.secret or "")
            return (
                scenario_context.CharmEvents.secret_changed(secret) if secret is not None else None
            )
        if k in ("secret-rotate", "secret-expired", "secret-remove"):
            secret = handles.get(event.secret or "")
            if secret is None or secret.owner is None:
                return None  # gone, or this unit no longer owns it
            if k == "secret-rotate":
                return scenario_context.CharmEvents.secret_rotate(secret)
            if k == "secret-expired":
                return scenario_context.CharmEvents.secret_expired(
                    secret, revision=int(event.revision or 0)
                )
            return scenario_context.CharmEvents.secret_remove(
                secret, revision=int(event.revision or 0)
            )
        relation = next((r for r in state.relations if r.id == event.relation), None)
        if relation is None:
            return None
        remote = self.world.units.get(event.remote) if event.remote else None
        remote_id = remote.number if remote else unit_number(event.remote)
        if k == "relation-created":
            return scenario_context.CharmEvents.relation_created(relation)
        if k == "relation-broken":
            return scenario_context.CharmEvents.relation_broken(relation)
        if k == "relation-joined":
            return scenario_context.CharmEvents.relation_joined(relation, remote_unit=remote_id)
        if k == "relation-changed":
            if remote_id is None:
                # The remote application's data changed: Juju runs relation-changed with no
                # remote unit, joined units or not. scenario insists on one, so it is given
                # one and juju_semantics empties JUJU_REMOTE_UNIT.
                remote_ids = list(relation._remote_unit_ids)
                remote_id = remote_ids[0] if remote_ids else 0
            return scenario_context.CharmEvents.relation_changed(relation, remote_unit=remote_id)
        if k == "relation-departed":
            return scenario_context.CharmEvents.relation_departed(
                relation, remote_unit=remote_id, departing_unit=unit_number(event.departing)
            )
        raise ModelError(f"unknown hook {k}")

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
                record.rotate = rotate_policy(secret.rotate)
                if record.rotate:
                    record.next_rotate = next_rotate(record.rotate, w.clock)
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
                policy = rotate_policy(secret.rotate)
                if policy != (rotate_policy(before.rotate) if before is not None else None):
                    record.rotate = policy
                    record.next_rotate = next_rotate(policy, w.clock) if policy else None
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

    def _add_tool_counts(self, unit: Unit, event: Event, tools: collections.Counter[str]) -> None:
        """Add one hook's hook-tool calls to the unit's counters (see kaji.model.hooktools)."""
        calls = sum(tools.values())
        unit.counters["hook_tools"] = unit.counters.get("hook_tools", 0) + calls
        unit.counters["hook_tools_max"] = max(unit.counters.get("hook_tools_max", 0), calls)
        for tool, n in tools.items():
            unit.counters[f"tool:{tool}"] = unit.counters.get(f"tool:{tool}", 0) + n
        self.tool_log.append((unit.name, event.kind, calls))

    def _address_problems(self, unit: Unit, out: Any, stamps: Mapping[str, int]) -> list[str]:
        """What in this hook works on a flat network only (see kaji.model.network).

        Services are the unit's own: those whose state a hook of this unit wrote (remembered
        as ``service:<name>`` counters), not its principal's or subordinate's.
        """
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
                    next_rotate(record.rotate, due) if rotated else due + SECRET_RETRY_DELAY
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

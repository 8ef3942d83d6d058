"""Juju's scoping rules: what a unit sees (relations, remote units, secrets, leadership).

The bottom layer of the engine (``Scoping`` <- ``Delivery`` <- ``HookRunner`` <- ``Model``):
which relations a unit takes part in, which remote units are in its scope, which secrets it
may read and how (owner or consumer, which revision), which unit runs an owner's secret hooks,
and where a machine's files, addresses and logs are. Nothing here changes the world.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaji.lazy import lazy_import
from kaji.model.network import MachineAddresses
from kaji.model.world import Event, Machine, Relation, SecretRecord, Unit, World

if TYPE_CHECKING:
    import ops
    from ops import testing
else:
    ops = lazy_import("ops")
    testing = lazy_import("ops.testing")


class Scoping:
    """What each unit of the world may see (read-only; see the module docstring)."""

    directory: Path
    world: World

    def machine_root(self, machine_id: int) -> Path:
        """The sandbox root of a machine: where its rendered files are."""
        return self.directory / "machines" / str(machine_id) / "root"

    def unit_root(self, unit: str) -> Path:
        """The sandbox root of the machine a unit is on."""
        return self.machine_root(self.world.units[unit].machine)

    def log_path(self, unit: str) -> Path:
        """The unit's log: juju-log lines and hook failures."""
        return self.directory / "logs" / f"{unit.replace('/', '-')}.log"

    def units_of(self, app: str, *, alive: bool = True) -> list[Unit]:
        """The units of ``app`` in unit-number order."""
        units = [u for u in self.world.units.values() if u.app == app]
        if alive:
            units = [u for u in units if not u.dying]
        return sorted(units, key=lambda u: u.number)

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

    def _partner(self, unit: Unit, rel: Relation) -> Unit | None:
        """The unit on the other side of a container-scoped relation on the same machine."""
        other_app = rel.other_app(unit.app)
        for other in self.world.units.values():
            if other.app == other_app and other.machine == unit.machine:
                return other
        return None

    def _granted(self, unit: Unit, record: SecretRecord) -> bool:
        for rid, grantees in record.grants.items():
            rel = self.world.relations.get(rid)
            if rel is None or not self._in_relation(unit, rel):
                continue
            if unit.name in grantees or unit.app in grantees:
                return True
        return False

    def _secret_view(self, unit: Unit, record: SecretRecord) -> Any:
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
            rotate=ops.SecretRotate(record.rotate) if owner and record.rotate else None,
        )
        object.__setattr__(secret, "_tracked_revision", tracked)
        object.__setattr__(secret, "_latest_revision", record.latest)
        return secret

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

    def _claim_pending(self, app_name: str) -> bool:
        """Whether a live unit of the application is about to run its first leader-elected."""
        return any(
            u.app == app_name and not u.dying and Event("leader-elected") in u.queue
            for u in self.world.units.values()
        )

    def addresses(self, machine: Machine) -> Any:
        """The machine's bind, ingress, public and loopback addresses."""
        if not machine.bind:  # a model saved before ranges
            return MachineAddresses(*[machine.address] * 4)
        return MachineAddresses(machine.bind, machine.address, machine.public, machine.loopback)

"""The charm shape every kaji charm shares: one reconcile entry point plus collect-status.

A kaji charm does not handle events one by one. Every event that can change what the machine
must hold triggers the same ``reconcile()``, which reads the whole picture (config, relations,
secrets) and makes the machine match it; ``assess_status()`` says how the unit is doing. Both
must be idempotent: a second run with nothing new changes nothing. ``assess_status()`` is
read-only: it reports what this dispatch's reconcile reached and never reconciles itself, since
ops runs collect-status after actions too.

A charm may opt in to a cheap ``update-status`` with :meth:`ReconcilingCharm.remember_reconciles`:
after each full reconcile it records a digest of everything the reconcile read that others can
change (config, the relation bags others write, plus :meth:`ReconcilingCharm.reconcile_inputs`)
and the status it reached. ``update-status`` then skips the reconcile and reports that status
while the digest is unchanged, the record is younger than its maximum age and the charm's own
:meth:`ReconcilingCharm.still_healthy` check passes; otherwise it reconciles.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import ops

from kaji import clock
from kaji.host.proxy import juju_proxy_values

if TYPE_CHECKING:
    from kaji.host import Host

__all__ = [
    "DEFAULT_MAX_AGE",
    "ReconcileRecord",
    "ReconcilingCharm",
]

#: Default maximum age of a reconcile record: a full reconcile runs at least this often.
DEFAULT_MAX_AGE = 6 * 3600
#: The statuses a charm sets and a record may therefore hold.
_RECORDABLE = frozenset({"active", "blocked", "maintenance", "waiting"})


class ReconcileRecord(NamedTuple):
    """What the last full reconcile saw and reached.

    Attributes:
        digest: the inputs digest the reconcile left behind.
        at: when (epoch seconds) the inputs last changed or the maximum age last forced a
            full reconcile; kept while both hold, so an unchanged record is not rewritten.
        status: the unit status the reconcile reached, as (name, message).
        recheck_after: when (epoch seconds) a full reconcile is due whatever else holds, e.g.
            the first certificate renewal; None: only the maximum age applies.
        facts: extra JSON-able facts the charm stored with it for its ``still_healthy``.
    """

    digest: str
    at: int
    status: tuple[str, str]
    recheck_after: int | None = None
    facts: Mapping[str, Any] = MappingProxyType({})

    def to_json(self) -> str:
        """The record's file content (stable: same record, same bytes)."""
        data = {
            "digest": self.digest,
            "at": self.at,
            "status": list(self.status),
            "recheck-after": self.recheck_after,
            "facts": dict(self.facts),
        }
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ReconcileRecord | None:
        """Parse a record; None when missing or malformed (then a full reconcile runs)."""
        try:
            data = json.loads(text) if text else None
            if not isinstance(data, dict):
                return None
            name, message = data["status"]
            facts = data.get("facts", {})
            recheck = data.get("recheck-after")
            if not (isinstance(data["digest"], str) and isinstance(data["at"], int)):
                return None
            if recheck is not None and not isinstance(recheck, int):
                return None
            if name not in _RECORDABLE or not isinstance(message, str):
                return None
            return cls(
                data["digest"],
                data["at"],
                (name, message),
                recheck,
                facts if isinstance(facts, dict) else {},
            )
        except (ValueError, KeyError, TypeError):
            return None

    def unit_status(self) -> ops.StatusBase:
        """The remembered status as an ops status."""
        return ops.StatusBase.from_name(*self.status)


class _Memory:
    """Where a charm's reconcile record lives, and what update-status remembered this hook."""

    __slots__ = ("host", "max_age", "path", "remembered")

    def __init__(self, host: Host, path: str, max_age: float) -> None:
        self.host, self.path, self.max_age = host, path, max_age
        self.remembered: ops.StatusBase | None = None


class ReconcilingCharm(ops.CharmBase):
    """Base class: observe the events that matter and route them all to ``reconcile``."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._memory: _Memory | None = None
        for event in self.reconcile_events():
            framework.observe(event, self._on_reconcile_event)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Return the events after which the machine may have to change.

        By default :meth:`lifecycle_events` and every :meth:`relation_events`. A charm that
        handles some events itself (e.g. departures, to see who is leaving) declares the list
        it wants from those two instead of filtering this one.
        """
        return [*self.lifecycle_events(), *self.relation_events()]

    def lifecycle_events(self) -> list[ops.BoundEvent]:
        """Install, start, config, upgrade, update-status, leadership and secret changes."""
        on = self.on
        return [
            on.install,
            on.start,
            on.config_changed,
            on.upgrade_charm,
            on.update_status,
            on.leader_elected,
            on.secret_changed,
        ]

    def relation_events(self, *, departures: bool = True) -> list[ops.BoundEvent]:
        """Joined and changed (and, with ``departures``, departed and broken) of every endpoint."""
        events: list[ops.BoundEvent] = []
        for endpoint in self.meta.relations:
            relation_events = self.on[endpoint]
            events += [relation_events.relation_joined, relation_events.relation_changed]
            if departures:
                events += [relation_events.relation_departed, relation_events.relation_broken]
        return events

    def _on_reconcile_event(self, event: ops.EventBase) -> None:
        if isinstance(event, ops.UpdateStatusEvent) and self._memory is not None:
            record = self.unchanged_record()
            if record is not None:
                self._memory.remembered = record.unit_status()
                return
        self.reconcile()

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        remembered = self._memory.remembered if self._memory is not None else None
        status = remembered if remembered is not None else self.assess_status()
        if status is not None:
            event.add_status(status)

    # -- cheap update-status (opt-in) --------------------------------------------------------

    def remember_reconciles(
        self, host: Host, path: str, *, max_age: float = DEFAULT_MAX_AGE
    ) -> None:
        """Opt in to the cheap update-status; call from ``__init__``.

        Args:
            host: the charm's Host; the record is a file on it (mode 0600).
            path: the record's machine path, e.g. ``/var/lib/kaji/<charm>/reconciled.json``.
            max_age: seconds after which update-status runs a full reconcile anyway
                (certificate renewal, drift the digest cannot see).

        The charm then calls :meth:`record_reconciled` at the end of a full reconcile and may
        override :meth:`reconcile_inputs` and :meth:`still_healthy`.
        """
        self._memory = _Memory(host=host, path=path, max_age=max_age)

    def reconcile_inputs(self) -> dict[str, Any]:
        """Extra JSON-able facts a reconcile reads besides config, leadership and relations.

        E.g. the unit's address or hostname. Part of the inputs digest.
        """
        return {}

    def still_healthy(self, record: ReconcileRecord) -> bool:
        """Whether the machine still is as the last full reconcile left it (cheap checks only).

        E.g. services still run, no certificate is due. ``record`` is the last record, with the
        facts the charm stored in it. Default: True.
        """
        return True

    def inputs_digest(self) -> str:
        """A digest of everything a reconcile reads that another party can change.

        Config, the model's proxy settings (JUJU_CHARM_*_PROXY), every relation's id and the
        data bags of other units and applications, plus
        this application's bag on peer relations (the leader writes it for every unit) and
        :meth:`reconcile_inputs`. Leadership is left out on purpose: gaining it always comes
        with leader-elected, which reconciles in full, and Juju runs no hook on the unit that
        lost it (its uniter only records the resignation), which has nothing on its machine to
        undo. Likewise this application's bag on other relations, which only the leader
        writes. So the former leader's next update-status stays cheap and writes nothing.
        """
        relations: dict[str, Any] = {}
        for endpoint, meta in self.meta.relations.items():
            peer = meta.role == ops.RelationRole.peer
            for relation in self.model.relations.get(endpoint, []):
                bags: dict[str, Any] = {}
                if peer:
                    bags["app"] = _bag(relation.data[self.app])
                if relation.app is not None and relation.app.name != self.app.name:
                    bags["remote-app"] = _bag(relation.data[relation.app])
                for unit in (self.unit, *sorted(relation.units, key=lambda u: u.name)):
                    bags[unit.name] = _bag(relation.data[unit])
                relations[f"{endpoint}:{relation.id}"] = bags
        data = {
            "config": dict(self.config),
            # Juju's proxy settings reach hooks as environment, with no event of their own.
            "proxies": juju_proxy_values(),
            "relations": relations,
            "extra": self.reconcile_inputs(),
        }
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def reconcile_record(self) -> ReconcileRecord | None:
        """The last record, or None (not opted in, never recorded, or unreadable)."""
        if self._memory is None:
            return None
        return ReconcileRecord.from_json(self._memory.host.read_text(self._memory.path))

    def record_reconciled(
        self,
        status: ops.StatusBase,
        *,
        recheck_after: int | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        """Remember a full reconcile's inputs and the status it reached; call at its end.

        Args:
            status: the status this reconcile reached (what ``assess_status`` reports).
            recheck_after: epoch seconds after which update-status must reconcile in full
                (e.g. the first certificate renewal); keep it stable across reconciles.
            facts: extra JSON-able facts for the charm's ``still_healthy``.

        The record keeps its time while the inputs stay the same and it is younger than the
        maximum age, so an unchanged reconcile rewrites nothing.
        """
        memory = self._memory
        if memory is None or status.name not in _RECORDABLE:
            return
        previous, digest, now = self.reconcile_record(), self.inputs_digest(), int(clock.time())
        at = now
        if (
            previous is not None
            and previous.digest == digest
            and now - previous.at <= memory.max_age
        ):
            at = previous.at
        record = ReconcileRecord(
            digest, at, (status.name, status.message), recheck_after, dict(facts or {})
        )
        memory.host.ensure_directory(posixpath.dirname(memory.path), 0o700)
        memory.host.write_file(memory.path, record.to_json(), mode=0o600)

    def unchanged_record(self) -> ReconcileRecord | None:
        """The last record when update-status may skip the reconcile, else None.

        That is: the inputs digest is unchanged, the record is not older than the maximum age,
        its ``recheck_after`` has not passed, and :meth:`still_healthy` holds.
        """
        memory, record = self._memory, self.reconcile_record()
        if memory is None or record is None:
            return None
        now = clock.time()
        if now - record.at > memory.max_age:
            return None
        if record.recheck_after is not None and now >= record.recheck_after:
            return None
        if record.digest != self.inputs_digest():
            return None
        try:
            healthy = self.still_healthy(record)
        except Exception:  # anything odd: leave it to the full reconcile
            return None
        return record if healthy else None

    def reconcile(self) -> None:
        """Make the machine match the desired state; must be idempotent."""
        raise NotImplementedError

    def assess_status(self) -> ops.StatusBase | None:
        """The status this dispatch's reconcile reached, or None when none ran.

        Called from collect-status, which ops runs after every hook *and after every action*:
        it must be read-only (no file, service, relation data or secret changes, and never a
        reconcile). None leaves the unit's status as Juju already has it, which is what an
        action, or an event the charm does not reconcile on, should do.
        """
        raise NotImplementedError


def _bag(content: ops.RelationDataContent) -> dict[str, str] | str:
    """A relation data bag as a plain dict, or a marker when Juju refuses to show it."""
    try:
        return dict(content)
    except ops.ModelError:
        return "unreadable"

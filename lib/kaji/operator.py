"""The charm shape every kaji charm shares: one reconcile entry point plus collect-status.

A kaji charm does not handle events one by one. Every event that can change what the machine
must hold triggers the same ``reconcile()``, which reads the whole picture (config, relations,
secrets) and makes the machine match it; ``assess_status()`` says how the unit is doing. Both
must be idempotent: a second run with nothing new changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import ops


class ReconcilingCharm(ops.CharmBase):
    """Base class: observe the events that matter and route them all to ``reconcile``."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        for event in self.reconcile_events():
            framework.observe(event, self._on_reconcile_event)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Return the events after which the machine may have to change.

        Lifecycle, config, leadership and secret events, plus joined/changed/departed/broken
        of every relation endpoint the charm declares.
        """
        on = self.on
        events: list[ops.BoundEvent] = [
            on.install,
            on.start,
            on.config_changed,
            on.upgrade_charm,
            on.update_status,
            on.leader_elected,
            on.secret_changed,
        ]
        for endpoint in self.meta.relations:
            relation_events = on[endpoint]
            events += [
                relation_events.relation_joined,
                relation_events.relation_changed,
                relation_events.relation_departed,
                relation_events.relation_broken,
            ]
        return events

    def _on_reconcile_event(self, _: ops.EventBase) -> None:
        self.reconcile()

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        event.add_status(self.assess_status())

    def reconcile(self) -> None:
        """Make the machine match the desired state; must be idempotent."""
        raise NotImplementedError

    def assess_status(self) -> ops.StatusBase:
        """Say how the unit is doing, for ``juju status``."""
        raise NotImplementedError


def app_secret_content(
    charm: ops.CharmBase, label: str, make: Callable[[], dict[str, str]]
) -> dict[str, str] | None:
    """Return the content of the app-owned secret ``label``; the leader creates it once.

    This is where CA keys live: made by the first leader, inherited by every later one, never
    regenerated on leader change. A non-leader reads it when Juju lets it (units of the owning
    application can) and gets None when it does not exist yet.
    """
    try:
        return charm.model.get_secret(label=label).get_content(refresh=True)
    except ops.SecretNotFoundError:
        if not charm.unit.is_leader():
            return None
    content = make()
    charm.app.add_secret(content, label=label, description=f"kaji: {label}")
    return content

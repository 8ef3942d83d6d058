"""Offline-model test charm that never settles: every hook bumps a counter in its databag."""

from __future__ import annotations

import ops


class FlapperCharm(ops.CharmBase):
    """Each peer change makes another one."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.noise_relation_changed, self._bump)
        framework.observe(self.on.noise_relation_joined, self._bump)

    def _bump(self, event: ops.RelationEvent) -> None:
        bag = event.relation.data[self.unit]
        bag["count"] = str(int(bag.get("count", "0")) + 1)
        self.unit.status = ops.ActiveStatus(bag["count"])


if __name__ == "__main__":  # pragma: nocover
    ops.main(FlapperCharm)

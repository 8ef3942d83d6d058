"""Offline-model test subordinate: the leader gives every unit a distinct index."""

from __future__ import annotations

import json

import ops

from kaji.host import host_from_environment
from kaji.reconciler import ReconcilingCharm


class SubCharm(ReconcilingCharm):
    """Writes its principal's flavour and its index to the shared machine."""

    def reconcile(self) -> None:
        """Allocate indexes (leader); render flavour and index."""
        host = host_from_environment()
        ring = self.model.get_relation("ring")
        if ring is not None and self.unit.is_leader():
            units = sorted({self.unit.name, *(u.name for u in ring.units)})
            current = json.loads(ring.data[self.app].get("index", "{}"))
            kept = {u: i for u, i in current.items() if u in units}
            for unit in units:
                if unit not in kept:
                    kept[unit] = min(set(range(len(units) + len(kept))) - set(kept.values()))
            encoded = json.dumps(kept, sort_keys=True)
            if ring.data[self.app].get("index") != encoded:
                ring.data[self.app]["index"] = encoded
        # A container-scoped endpoint binds on the principal's machine (network-get works).
        binding = self.model.get_binding("host")
        if binding is not None:
            host.write_file("/etc/sub/bind-address", f"{binding.network.bind_address}\n")
        principal = self.model.get_relation("host")
        if principal is not None and principal.units:
            (unit,) = principal.units
            flavour = principal.data[unit].get("flavour")
            if flavour:
                host.write_file("/etc/sub/flavour", flavour + "\n")
        index = self._index()
        if index is not None:
            host.write_file("/etc/sub/index", f"{index}\n")

    def _index(self) -> int | None:
        ring = self.model.get_relation("ring")
        if ring is None:
            return None
        return json.loads(ring.data[self.app].get("index", "{}")).get(self.unit.name)

    def assess_status(self) -> ops.StatusBase:
        """Active with the unit's index."""
        index = self._index()
        if index is None:
            return ops.WaitingStatus("waiting for an index")
        return ops.ActiveStatus(f"index {index}")


if __name__ == "__main__":  # pragma: nocover
    ops.main(SubCharm)

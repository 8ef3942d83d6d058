"""Offline-model test charm: consumes the provider's secret and addresses."""

from __future__ import annotations

import ops

from kaji.host import host_from_environment
from kaji.reconciler import ReconcilingCharm


class RequirerCharm(ReconcilingCharm):
    """Renders the granted key and the provider addresses; tells its subordinate a flavour."""

    def _provider(self) -> tuple[str | None, list[str], str]:
        relation = self.model.get_relation("db")
        if relation is None or relation.app is None:
            return None, [], ""
        bag = relation.data[relation.app]
        key = None
        if "secret-id" in bag:
            key = self.model.get_secret(id=bag["secret-id"]).get_content(refresh=True)["key"]
        addresses = sorted(
            relation.data[u]["address"] for u in relation.units if "address" in relation.data[u]
        )
        return key, addresses, bag.get("greeting", "")

    def reconcile(self) -> None:
        """Render what the provider sent; pass the flavour to the subordinate."""
        host = host_from_environment()
        key, addresses, greeting = self._provider()
        if key is not None:
            host.write_file("/etc/requirer/key", key + "\n", mode=0o600)
        host.write_file("/etc/requirer/providers", "".join(f"{a}\n" for a in addresses))
        host.write_file("/etc/requirer/greeting", greeting + "\n")
        sub = self.model.get_relation("host")
        if sub is not None:
            flavour = str(self.config["flavour"])
            if sub.data[self.unit].get("flavour") != flavour:
                sub.data[self.unit]["flavour"] = flavour

    def assess_status(self) -> ops.StatusBase:
        """Active once the key and at least one provider address are known."""
        key, addresses, _ = self._provider()
        if key is None or not addresses:
            return ops.WaitingStatus("waiting for the provider")
        return ops.ActiveStatus(f"providers: {len(addresses)}")


if __name__ == "__main__":  # pragma: nocover
    ops.main(RequirerCharm)

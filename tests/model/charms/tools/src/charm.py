"""Offline-model test charm: on update-status, a known set of hook-tool calls.

Three ``is_leader()`` calls (ops runs ``is-leader`` once: it caches the lease), three config
reads (one ``config-get``: ops reads all options at once), two keys set in its peer bag
(two ``relation-set``: ops runs one per key), and no status (nothing else).
"""

from __future__ import annotations

import ops


class ToolsCharm(ops.CharmBase):
    """See the module docstring."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.update_status, self._update_status)

    def _update_status(self, _: ops.UpdateStatusEvent) -> None:
        for _ in range(3):
            self.unit.is_leader()
        _ = (self.config["a"], self.config["b"], self.config["a"])
        peers = self.model.get_relation("peers")
        assert peers is not None
        counter = int(peers.data[self.unit].get("n", "0")) + 1
        peers.data[self.unit]["n"] = str(counter)
        peers.data[self.unit]["m"] = str(counter * 2)


if __name__ == "__main__":  # pragma: nocover
    ops.main(ToolsCharm)

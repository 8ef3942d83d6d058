"""Offline-model test subordinate: records every event it sees (see the recorder charm)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ops

from kaji import clock
from kaji.host import host_from_environment


class TracerCharm(ops.CharmBase):
    """Records each dispatch where the recorder does (one JSON line each)."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        for name, source in self.on.events().items():
            if not name.startswith("collect_"):
                framework.observe(source, self._record)
        framework.observe(self.on.collect_unit_status, self._status)

    def _record(self, event: ops.EventBase) -> None:
        entry: dict[str, Any] = {
            "hook": os.environ.get("JUJU_DISPATCH_PATH", "").split("/", 1)[-1],
            "leader": self.unit.is_leader(),
            "time": clock.time(),
        }
        if isinstance(event, ops.RelationEvent):
            entry["relation"] = event.relation.name
            entry["remote_unit"] = event.unit.name if event.unit else None
            entry["units"] = sorted(u.name for u in event.relation.units)
        shared = os.environ.get("KAJI_TEST_RECORDER_DIR")
        if shared:
            path = Path(shared) / "events.jsonl"
        else:
            name = self.unit.name.replace("/", "-")
            path = host_from_environment().path(f"/var/log/recorder/{name}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(json.dumps({"unit": self.unit.name, **entry}, sort_keys=True) + "\n")

    def _status(self, event: ops.CollectStatusEvent) -> None:
        event.add_status(ops.ActiveStatus("tracing"))


if __name__ == "__main__":  # pragma: nocover
    ops.main(TracerCharm)

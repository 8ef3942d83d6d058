"""``juju status`` for the offline model, plus which services really run on each machine.

The model never pretends: a service is reported ``running`` only when the machine's process
manager holds a live pid for it; a service a charm only recorded (its binary is not on this
machine, or the model runs without processes) is reported as ``recorded``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaji.host.processes import ProcessManager
from kaji.model.hooktools import merge, summarise

if TYPE_CHECKING:
    from kaji.model.engine import Model


@dataclasses.dataclass(frozen=True)
class ServiceState:
    """One service of a machine as the model found it."""

    name: str
    state: str  # running | stopped | recorded
    pid: int | None
    program: str

    def describe(self, processes: bool) -> str:
        """A short human phrase: ``etcd: running (pid 42)``, ``kubelet: recorded (...)``."""
        if self.state == "running":
            return f"{self.name}: running (pid {self.pid})"
        if self.state == "stopped":
            return f"{self.name}: stopped"
        why = (
            f"{os.path.basename(self.program)} not on this machine"
            if processes
            else "model runs without processes"
        )
        return f"{self.name}: recorded only ({why})"


def machine_services(root: Path) -> list[ServiceState]:
    """Every service a process or recording manager keeps state for under ``/var/lib/kaji``.

    A state file holding a pid belongs to a ProcessManager: the service is ``running`` only
    if that pid is alive and still the process that was started. Any other state file is a
    RecordingManager's: ``recorded`` (never a process) or ``stopped``.
    """
    found: dict[str, ServiceState] = {}
    base = root / "var/lib/kaji"
    for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(state, dict) or "spec" not in state or "fingerprint" not in state:
            continue
        name = path.stem
        argv = (state.get("spec") or {}).get("argv") or [""]
        if "pid" in state or path.with_suffix(".pid").exists():
            pid = ProcessManager(path.parent).pid(name)
            found[name] = ServiceState(
                name, "running" if pid is not None else "stopped", pid, argv[0]
            )
        elif name not in found:
            running = bool(state.get("running"))
            found[name] = ServiceState(name, "recorded" if running else "stopped", None, argv[0])
    return sorted(found.values(), key=lambda s: (s.state != "running", s.name))


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _display_path(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


_SEVERITY = {"unknown": 0, "active": 1, "waiting": 2, "maintenance": 3, "blocked": 4, "error": 5}


def status_data(model: Model) -> dict[str, Any]:
    """The status as plain data (what ``status --format json`` prints)."""
    w = model.world
    tools = {name: summarise(unit.counters) for name, unit in w.units.items()}
    apps = {}
    for app in w.apps.values():
        status: tuple[str, str] = app.status
        if status[0] == "unknown":  # like Juju: the most severe unit status stands in
            worst = sorted(
                (_SEVERITY.get("error" if u.error else u.status[0], 0), u.status[0])
                for u in model.units_of(app.name)
            )
            if worst:
                status = ("error" if worst[-1][0] == _SEVERITY["error"] else worst[-1][1], "")
        apps[app.name] = {
            "charm": app.charm,
            "source": app.source,
            "subordinate": app.subordinate,
            "leader": app.leader,
            "status": status[0],
            "message": status[1],
            "config": dict(app.config),
            "units": [u.name for u in model.units_of(app.name, alive=False)],
            "hook_tools": merge([tools[u.name] for u in model.units_of(app.name, alive=False)]),
        }
    units = {}
    for unit in sorted(w.units.values(), key=lambda u: (u.app, u.number)):
        machine = w.machines[unit.machine]
        workload, message = ("error", unit.error) if unit.error else unit.status
        units[unit.name] = {
            "workload": workload,
            "message": message,
            "machine": unit.machine,
            "address": machine.address,
            "hostname": machine.hostname,
            "leader": w.apps[unit.app].leader == unit.name,
            "hook_tools": tools[unit.name],
            "principal": unit.principal,
            "pending": [str(e) for e in unit.queue],
            "counters": dict(unit.counters),
            "files": str(model.machine_root(unit.machine)),
            "log": str(model.log_path(unit.name)),
        }
    machines = {}
    for machine in sorted(w.machines.values(), key=lambda m: m.id):
        root = model.machine_root(machine.id)
        addresses = model.addresses(machine)
        machines[str(machine.id)] = {
            "hostname": machine.hostname,
            "address": machine.address,
            "addresses": dataclasses.asdict(addresses),
            "files": str(root),
            "units": sorted(u.name for u in w.units.values() if u.machine == machine.id),
            "services": [dataclasses.asdict(s) for s in machine_services(root)],
        }
    relations = [
        {
            "id": rel.id,
            "endpoints": [f"{a}:{e}" for a, e in rel.endpoints.items()],
            "interface": rel.interface,
            "type": "peer" if rel.peer else ("subordinate" if rel.container else "regular"),
        }
        for rel in sorted(w.relations.values(), key=lambda r: r.id)
    ]
    return {
        "model": {
            "directory": str(model.directory),
            "bundle": w.bundle,
            "overlays": list(w.overlays),
            "processes": w.processes,
            "pending": model.pending(),
            "range": w.network.get("range", ""),
        },
        "applications": apps,
        "units": units,
        "machines": machines,
        "relations": relations,
    }


def format_status(model: Model) -> str:
    """A ``juju status``-like table: apps, units, machines (files, services), relations."""
    data = status_data(model)
    w = model.world
    out: list[str] = []
    rows: list[tuple[str, ...]]
    mode = "real where installed" if w.processes else "recorded only"
    out += _table(
        [
            ("Model", "Directory", "Addresses", "Services", "Units", "Pending hooks"),
            (
                "kaji",
                _display_path(model.directory),
                w.network.get("range", "-"),
                mode,
                str(len(w.units)),
                str(model.pending()),
            ),
        ]
    )
    out.append("")
    rows = [("App", "Charm", "Status", "Scale", "Leader", "Message")]
    for name, app in data["applications"].items():
        rows.append(
            (
                name,
                app["charm"],
                app["status"],
                str(len(app["units"])),
                app["leader"] or "-",
                app["message"],
            )
        )
    out += _table(rows)
    out.append("")
    rows = [("Unit", "Workload", "Machine", "Address", "Hooks", "Message")]
    principals = [n for n, u in data["units"].items() if u["principal"] is None]
    for name in principals:
        for sub_name in [name] + [n for n, u in data["units"].items() if u["principal"] == name]:
            unit = data["units"][sub_name]
            label = sub_name + ("*" if unit["leader"] else "")
            if unit["principal"]:
                label = "  " + label
            rows.append(
                (
                    label,
                    unit["workload"],
                    str(unit["machine"]),
                    unit["address"],
                    str(unit["counters"].get("hooks", 0)),
                    unit["message"] or "",
                )
            )
    out += _table(rows)
    out.append("")
    rows = [("Machine", "Hostname", "Ingress", "Bind", "Public", "Rendered files")]
    for mid, machine in data["machines"].items():
        a = machine["addresses"]
        rows.append(
            (
                mid,
                machine["hostname"],
                a["ingress"],
                a["bind"],
                a["public"],
                _display_path(Path(machine["files"])),
            )
        )
    out += _table(rows)
    out.append("")
    rows = [("Machine", "Services")]
    for mid, machine in data["machines"].items():
        services = [ServiceState(**s) for s in machine["services"]]
        if not services:
            rows.append((mid, "-"))
        for i, service in enumerate(services):
            rows.append((mid if i == 0 else "", service.describe(w.processes)))
    out += _table(rows)
    out.append("")
    rows = [("Integration", "Interface", "Type")]
    for rel in data["relations"]:
        rows.append((" ".join(rel["endpoints"]), rel["interface"], rel["type"]))
    out += _table(rows)
    return "\n".join(out)


def format_status_json(model: Model) -> str:
    """The status as JSON."""
    return json.dumps(status_data(model), indent=1, sort_keys=True)

#!/usr/bin/env python3
"""What a no-op update-status costs each charm, against a bare ``import ops``.

Method (see docs/performance.md, "hook cost"):

1. Deploy bundles/k8s.yaml in the offline model (lib/kaji/model): every unit settles through
   the charms' real code and ends with its sandboxed machine and reconcile record on disk.
2. For one unit of each charm, turn the state the model would deliver to it into the answers
   Juju's hook tools would give (config-get, is-leader, relation-ids/list/get, network-get),
   and write the charm directory Juju would run (metadata.yaml, config.yaml, actions.yaml).
3. In a fresh interpreter per run, time ``import ops`` alone (a) and, separately, the whole
   real entry point of the charm (b): ``import ops``, import the charm module, ``ops.main``
   dispatching ``update-status`` -- framework, SQLite state, logging, the charm's handlers,
   collect-status and status-set. The hook tools are answered in-process from step 2, so
   their process starts (the same for every charm, paid to Juju, not to Python) are left out.
4. Check each run was a no-op: no relation-set, no cryptography imported, the status set
   equals the recorded one, and no file under the unit's machine changed.

Run: ``python tools/bench_hooks.py [--runs N] [--write-docs]``. Not a test: the numbers depend
on the machine; the ratio is what the design's target speaks about.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHARMS = ROOT / "charms"
BUNDLE = ROOT / "bundles" / "k8s.yaml"
DOC = ROOT / "docs" / "performance.md"
CHARM_CLASSES = {
    "etcd": "EtcdCharm",
    "control-plane": "ControlPlaneCharm",
    "worker": "WorkerCharm",
    "cni": "CniCharm",
}
TARGET = 1.5

_IMPORT_OPS = """
import time
t0 = time.perf_counter()
import ops
print(time.perf_counter() - t0)
"""

#: The child that runs one update-status through the charm's real ops.main entry point.
_HOOK = r"""
import time
t0 = time.perf_counter()
import ops
t1 = time.perf_counter()
import json, os, sys

answers = json.loads(open(os.environ["BENCH_ANSWERS"]).read())
calls = []


def _rel(args):
    ref = args[args.index("-r") + 1]
    return answers["relations"][ref.rpartition(":")[2]]


def fake_run(*args, input=None, redacted_cmd=None):
    cmd, rest = args[0], list(args[1:])
    calls.append(cmd)
    if cmd == "is-leader":
        return json.dumps(answers["leader"])
    if cmd == "config-get":
        return json.dumps(answers["config"])
    if cmd == "relation-ids":
        return json.dumps(
            [f"{r['endpoint']}:{i}" for i, r in answers["relations"].items()
             if r["endpoint"] == rest[0]]
        )
    if cmd == "relation-list":
        rel = _rel(rest)
        return json.dumps(rel["app"] if "--app" in rest else rel["units"])
    if cmd == "relation-get":
        rel, member = _rel(rest), rest[rest.index("-") + 1]
        key = "app:" + member if "--app" in rest else member
        return json.dumps(rel["bags"].get(key, {}))
    if cmd == "network-get":
        address = answers["networks"].get(rest[-1], answers["default-address"])
        return json.dumps({
            "bind-addresses": [{"mac-address": "", "interface-name": "", "addresses": [
                {"hostname": "", "value": address, "cidr": f"{address}/32"}]}],
            "egress-subnets": [f"{address}/32"],
            "ingress-addresses": [address],
        })
    if cmd == "status-set":
        message = rest[3] if len(rest) > 3 else ""
        calls.append(["status", rest[0].split("=", 1)[1], rest[1], message])
        return ""
    if cmd in ("juju-log", "application-version-set", "relation-set"):
        return ""
    raise RuntimeError(f"bench: unexpected hook tool {args!r}")


for name, module in list(sys.modules.items()):
    if name.startswith("ops.") and hasattr(module, "run") and name.startswith("ops.hookcmds"):
        module.run = fake_run
sys.path[:0] = [os.environ["BENCH_SRC"], os.environ["BENCH_LIB"]]
import charm
t2 = time.perf_counter()
ops.main(getattr(charm, os.environ["BENCH_CLASS"]))
t3 = time.perf_counter()
status = [c for c in calls if isinstance(c, list) and c[1] == "False"]
print(json.dumps({
    "import_ops": t1 - t0,
    "import_charm": t2 - t1,
    "hook": t3 - t2,
    "total": t3 - t0,
    "crypto": any(m.startswith("cryptography") for m in sys.modules),
    "relation_set": calls.count("relation-set"),
    "status": status[-1][2:] if status else None,
}))
"""


def settle_model(directory: Path) -> Any:
    """The default bundle deployed and settled in the offline model."""
    from kaji.model.engine import Model

    bundles = directory / "bundles"
    bundles.mkdir(parents=True)
    shutil.copy(BUNDLE, bundles / BUNDLE.name)
    model = Model.create(directory / "model")
    model.deploy(bundles / BUNDLE.name, (), CHARMS, from_source=True)
    return model


def answers_for(model: Any, unit: Any) -> dict[str, Any]:
    """What Juju's hook tools would answer this unit in an update-status hook."""
    from ops import testing

    from kaji.model.world import Event

    state, _ = model._state_for(unit, Event("update-status"))
    code = model.code(unit.app)
    options = (code.config or {}).get("options", {})
    config = {k: v["default"] for k, v in options.items() if "default" in v}
    config.update(state.config)
    relations: dict[str, Any] = {}
    for rel in state.relations:
        bags = {unit.name: dict(rel.local_unit_data), f"app:{unit.app}": dict(rel.local_app_data)}
        if isinstance(rel, testing.PeerRelation):
            app, remote = unit.app, {f"{unit.app}/{n}": d for n, d in rel.peers_data.items()}
        elif isinstance(rel, testing.SubordinateRelation):
            app = rel.remote_app_name
            remote = {f"{app}/{rel.remote_unit_id}": dict(rel.remote_unit_data)}
        else:
            app = rel.remote_app_name
            remote = {f"{app}/{n}": d for n, d in rel.remote_units_data.items()}
        if app != unit.app:
            bags[f"app:{app}"] = dict(rel.remote_app_data)
        bags.update({name: dict(data) for name, data in remote.items()})
        relations[str(rel.id)] = {
            "endpoint": rel.endpoint,
            "app": app,
            "units": sorted(remote),
            "bags": bags,
        }
    networks = {n.binding_name: n.ingress_addresses[0] for n in state.networks}
    return {
        "leader": state.leader,
        "config": config,
        "relations": relations,
        "networks": networks,
        "default-address": "192.0.2.0",
        "status": list(unit.status),
    }


def charm_dir(code: Any, directory: Path) -> Path:
    """The charm directory Juju would run: metadata, config and actions as packing splits them."""
    import yaml

    directory.mkdir(parents=True)
    (directory / "metadata.yaml").write_text(yaml.safe_dump(code.metadata))
    (directory / "config.yaml").write_text(yaml.safe_dump(code.config or {}))
    (directory / "actions.yaml").write_text(yaml.safe_dump(code.actions or {}))
    return directory


def machine_digest(root: Path) -> str:
    """A digest of every file (path, mode, content) under a unit's machine."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(str(path.stat().st_mode).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def time_import_ops() -> float:
    """Seconds ``import ops`` takes in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_OPS], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def run_hook(env: dict[str, str]) -> dict[str, Any]:
    """Run one update-status through the charm's ops.main in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _HOOK], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"update-status failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def bench(runs: int) -> list[dict[str, Any]]:
    """Measure every charm; returns one row per charm."""
    rows = []
    # Juju runs a charm from a writable directory, so after its first hook Python loads the
    # charm's modules from bytecode, as it loads ops (compiled by pip). Compile them once here
    # too: otherwise each run would pay compiling the charm but not ops
    # (PYTHONDONTWRITEBYTECODE is set in tox).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(CHARMS), str(ROOT / "lib")],
        check=True,
        capture_output=True,
    )
    with tempfile.TemporaryDirectory(prefix="kaji-bench-hooks-") as tmp:
        model = settle_model(Path(tmp))
        try:
            for app, cls in CHARM_CLASSES.items():
                unit = model.units_of(app)[0]
                answers = answers_for(model, unit)
                work = Path(tmp) / "hooks" / app
                code = model.code(app)
                cdir = charm_dir(code, work / "charm")
                (work / "answers.json").write_text(json.dumps(answers))
                machine = model.world.machines[unit.machine]
                root = model.machine_root(machine.id)
                env = {
                    **os.environ,
                    "BENCH_ANSWERS": str(work / "answers.json"),
                    "BENCH_SRC": str(CHARMS / app / "src"),
                    "BENCH_LIB": str(ROOT / "lib"),
                    "BENCH_CLASS": cls,
                    "KAJI_HOST_ROOT": str(root),
                    "KAJI_HOST_HOSTNAME": machine.hostname,
                    "KAJI_HOST_LOOPBACK": machine.address,
                    "KAJI_HOST_PROCESSES": "0",
                    "JUJU_UNIT_NAME": unit.name,
                    "JUJU_CHARM_DIR": str(cdir),
                    "JUJU_DISPATCH_PATH": "hooks/update-status",
                    "JUJU_HOOK_NAME": "update-status",
                    "JUJU_MODEL_NAME": "kaji",
                    "JUJU_MODEL_UUID": model.world.uuid,
                    "JUJU_VERSION": "3.6.4",
                    "JUJU_MACHINE_ID": str(machine.id),
                }
                if unit.principal:
                    env["JUJU_PRINCIPAL_UNIT"] = unit.principal
                before = machine_digest(root)
                bare: list[float] = []
                hooks: list[dict[str, Any]] = []
                for _ in range(runs):  # interleaved, so drift hits both alike
                    bare.append(time_import_ops())
                    hooks.append(run_hook(env))
                unchanged = machine_digest(root) == before
                last = hooks[-1]
                totals = [h["total"] for h in hooks]
                rows.append(
                    {
                        "charm": app,
                        "unit": unit.name,
                        "import_ops": statistics.median(bare),
                        "hook": statistics.median(totals),
                        "import_charm": statistics.median(h["import_charm"] for h in hooks),
                        "dispatch": statistics.median(h["hook"] for h in hooks),
                        "ratio": statistics.median(totals) / statistics.median(bare),
                        "noop": (
                            unchanged
                            and not any(h["crypto"] or h["relation_set"] for h in hooks)
                            and last["status"] == answers["status"]
                        ),
                        "crypto": any(h["crypto"] for h in hooks),
                        "files_unchanged": unchanged,
                        "status": last["status"],
                        "expected_status": answers["status"],
                    }
                )
        finally:
            model.destroy()
    return rows


def table(rows: list[dict[str, Any]], runs: int) -> str:
    """The "hook cost" results as markdown."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"<!-- written by tools/bench_hooks.py on {stamp}; do not edit by hand -->",
        "",
        f"Measured {stamp} with Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, median of {runs} fresh interpreters each:",
        "",
        "| charm | import ops ms | update-status ms | of which charm import ms "
        "| dispatch ms | ratio | no-op |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['charm']} | {r['import_ops'] * 1000:.1f} | {r['hook'] * 1000:.1f} "
            f"| {r['import_charm'] * 1000:.1f} | {r['dispatch'] * 1000:.1f} "
            f"| {r['ratio']:.2f} | {'yes' if r['noop'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def write_docs(results: str) -> None:
    """Replace the generated part of the "## hook cost" section of docs/performance.md."""
    text = DOC.read_text()
    pattern = re.compile(
        r"(## hook cost\n.*?)<!-- written by tools/bench_hooks.py.*?(?=\n## |\Z)", re.S
    )
    if not pattern.search(text):
        raise SystemExit("docs/performance.md has no generated hook cost results to replace")
    DOC.write_text(pattern.sub(lambda m: m.group(1) + results, text, count=1))


def main() -> int:
    """Measure, print, optionally write the docs; exit 1 if a charm misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per measure")
    parser.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "lib")]
    rows = bench(args.runs)
    results = table(rows, args.runs)
    print(results)
    for r in rows:
        if not r["noop"]:
            print(f"{r['charm']}: NOT a no-op: {json.dumps(r)}", file=sys.stderr)
    if args.write_docs:
        write_docs(results)
    worst = max(r["ratio"] for r in rows)
    return 0 if worst <= TARGET and all(r["noop"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

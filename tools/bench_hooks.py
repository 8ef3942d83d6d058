#!/usr/bin/env python3
"""What a no-op update-status costs each charm, against a bare ``import ops``.

Method (see docs/performance.md, "hook cost"):

1. Deploy bundles/k8s.yaml in the offline model (lib/kaji/model): every unit settles through
   the charms' real code and ends with its sandboxed machine and reconcile record on disk.
2. For one unit of each charm, turn the state the model would deliver to it into the answers
   Juju's hook tools would give (config-get, is-leader, relation-ids/list/get, network-get with
   each binding's own bind and ingress addresses, secret-get/secret-info-get, resource-get,
   goal-state), take the environment the model runs its hooks with (sandbox, loopback,
   ``KAJI_CLOCK_OFFSET`` from the model's clock, Juju's ``JUJU_CHARM_*_PROXY`` as the model's
   hooks see them), and write the charm directory Juju would run (metadata.yaml, config.yaml,
   actions.yaml).
3. In a fresh interpreter per run, time ``import ops`` alone (a) and, separately, the whole
   real entry point of the charm (b): ``import ops``, import the charm module, ``ops.main``
   dispatching ``update-status`` -- framework, SQLite state, logging, the charm's handlers,
   collect-status and status-set. The hook tools are answered in-process from step 2, so
   their process starts (the same for every charm, paid to Juju, not to Python) are left out.
4. Check each run was a no-op: no relation-set (nor another writing hook tool: ports,
   secrets), no cryptography imported, the status set
   equals the recorded one, and no file under the unit's machine changed. A run that is not
   is reported with the hook tools it ran (e.g. secret-get: it reconciled in full).

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
WRITES = ("relation-set", "open-port", "close-port", "secret-set", "secret-add",
          "secret-grant", "secret-revoke", "secret-remove")
calls = []
logs = []


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
        name = rest[-1]
        name = answers["container-endpoints"].get(name, name)
        if name not in answers["networks"]:
            raise RuntimeError(f"bench: network-get for unknown binding {name!r}")
        return json.dumps(answers["networks"][name])
    if cmd in ("secret-get", "secret-info-get"):
        secret = _secret(rest)
        if cmd == "secret-info-get":
            return json.dumps({secret["id"]: secret["info"]})
        latest = "--peek" in rest or "--refresh" in rest
        return json.dumps(secret["latest" if latest else "tracked"])
    if cmd == "resource-get":
        return answers["resources"][rest[0]]
    if cmd == "goal-state":
        return json.dumps(answers["goal-state"])
    if cmd == "status-set":
        message = rest[3] if len(rest) > 3 else ""
        calls.append(["status", rest[0].split("=", 1)[1], rest[1], message])
        return ""
    if cmd == "juju-log":
        logs.append(rest[-1])
        return ""
    if cmd == "opened-ports":
        return "[]"  # the model keeps no opened ports: each hook starts with none
    if cmd in ("application-version-set", *WRITES):
        return ""
    raise RuntimeError(f"bench: unexpected hook tool {args!r}")


def _secret(rest):
    # The secret named by id (first positional argument) or --label.
    positional = [a for a in rest if not a.startswith("--")]
    if "--label" in rest:
        positional.remove(rest[rest.index("--label") + 1])
    if positional:
        wanted = positional[0].rpartition("/")[2].removeprefix("secret:")
        for secret in answers["secrets"]:
            if secret["id"].rpartition("/")[2].removeprefix("secret:") == wanted:
                return secret
    elif "--label" in rest:
        label = rest[rest.index("--label") + 1]
        for secret in answers["secrets"]:
            if secret["info"].get("label") == label:
                return secret
    raise RuntimeError(f"bench: secret-get for an unknown secret {rest!r}")


for name, module in list(sys.modules.items()):
    if name.startswith("ops.") and hasattr(module, "run") and name.startswith("ops.hookcmds"):
        module.run = fake_run
sys.path[:0] = [os.environ["BENCH_SRC"], os.environ["BENCH_LIB"]]
import charm
t2 = time.perf_counter()
try:
    ops.main(getattr(charm, os.environ["BENCH_CLASS"]))
except BaseException:
    import traceback

    print("\n".join(logs[-20:]), traceback.format_exc(), sep="\n", file=sys.stderr)
    raise
t3 = time.perf_counter()
status = [c for c in calls if isinstance(c, list) and c[1] == "False"]
print(json.dumps({
    "import_ops": t1 - t0,
    "import_charm": t2 - t1,
    "hook": t3 - t2,
    "total": t3 - t0,
    "crypto": any(m.startswith("cryptography") for m in sys.modules),
    "relation_set": calls.count("relation-set"),
    "writes": sum(calls.count(tool) for tool in WRITES),
    "status": status[-1][2:] if status else None,
    "tools": sorted({c for c in calls if isinstance(c, str)}),
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
    # network-get exactly as the model answers it: each binding's bind addresses (the machine's
    # interface) and ingress addresses (what others reach it at) are distinct; a
    # container-scoped endpoint binds like juju-info (kaji.model.network.container_bindings).
    networks = {n.binding_name: n._hook_tool_output_fmt() for n in state.networks}
    container = {
        name: "juju-info"
        for role in ("provides", "requires", "peers")
        for name, spec in (code.meta.get(role) or {}).items()
        if (spec or {}).get("scope") == "container"
    }
    return {
        "leader": state.leader,
        "config": config,
        "relations": relations,
        "networks": networks,
        "container-endpoints": container,
        "secrets": [_secret_answer(secret) for secret in state.secrets],
        "resources": {r.name: str(r.path) for r in state.resources},
        "goal-state": {"units": {}, "relations": {}},
        "status": list(unit.status),
    }


def _secret_answer(secret: Any) -> dict[str, Any]:
    """secret-get and secret-info-get for one secret the unit sees, as the model answers them.

    Owners track their revision like everyone else (Juju >= 3.3.1, which the bench claims).
    """

    def stamp(value: Any) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value is not None else None

    rotate = getattr(secret.rotate, "value", secret.rotate)
    return {
        "id": secret.id,
        "tracked": dict(secret.tracked_content),
        "latest": dict(secret.latest_content or secret.tracked_content),
        "info": {
            "label": secret.label,
            "description": secret.description,
            "revision": secret._latest_revision,
            "expiry": stamp(secret.expire),
            "rotation": rotate,
        },
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
        raise RuntimeError(f"update-status failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
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
                # The model's hooks run in this process's environment (so with its
                # JUJU_CHARM_*_PROXY, if any) plus the machine's sandbox variables.
                env = {
                    **os.environ,
                    "BENCH_ANSWERS": str(work / "answers.json"),
                    "BENCH_SRC": str(CHARMS / app / "src"),
                    "BENCH_LIB": str(ROOT / "lib"),
                    "BENCH_CLASS": cls,
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
                    # As the model delivers a hook now: its clock offset is taken per hook.
                    hooks.append(run_hook({**env, **model._hook_env(machine)}))
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
                            and not any(
                                h["crypto"] or h["relation_set"] or h["writes"] for h in hooks
                            )
                            and last["status"] == answers["status"]
                        ),
                        "crypto": any(h["crypto"] for h in hooks),
                        "files_unchanged": unchanged,
                        "status": last["status"],
                        "expected_status": answers["status"],
                        "tools": sorted({t for h in hooks for t in h["tools"]}),
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

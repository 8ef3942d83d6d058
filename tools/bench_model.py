#!/usr/bin/env python3
"""Benchmark the bundle in the offline model; write docs/performance.md's offline-model part.

Measures, with recorded services (no processes): hooks per unit, service (re)starts, file
writes and wall time to deploy bundles/k8s.yaml and to scale the workers 2 -> 10 -> 50; and
the hooks an existing worker (and its cni subordinate) runs when one more worker is added, as
the cluster grows.

    PYTHONPATH=lib python tools/bench_model.py [--max-workers 50] [--output docs/performance.md]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from kaji.model.engine import Model, RunStats  # noqa: E402

SECTION = "## offline model"


def _by_app(model: Model, stats: RunStats) -> dict[str, list[dict[str, int]]]:
    grouped: dict[str, list[dict[str, int]]] = {}
    for unit, counters in stats.per_unit.items():
        app = unit.split("/")[0]
        if unit in model.world.units or counters.get("hooks"):
            grouped.setdefault(app, []).append(counters)
    return grouped


def _tool_figures(model: Model, since: int) -> str:
    """Hook-tool calls per hook, mean/max per application, for the hooks run since ``since``."""
    per_app: dict[str, list[int]] = {}
    for unit, _, calls in model.tool_log[since:]:
        per_app.setdefault(unit.split("/")[0], []).append(calls)
    return ", ".join(
        f"{a} {statistics.mean(c):.0f}/{max(c)}" for a, c in sorted(per_app.items()) if c
    )


def _step_row(label: str, model: Model, stats: RunStats, since: int = 0) -> str:
    grouped = _by_app(model, stats)
    hooks = {a: [c["hooks"] for c in cs if c["hooks"]] for a, cs in grouped.items()}
    per_app = ", ".join(
        f"{a} {statistics.mean(h):.1f}/{max(h)}" for a, h in sorted(hooks.items()) if h
    )
    restarts = stats.total("services_restarted")
    starts = stats.total("services_started")
    writes = stats.total("files_written")
    active = sum(1 for u in model.world.units.values() if u.status[0] == "active" and not u.error)
    return (
        f"| {label} | {stats.hooks} | {per_app} | {_tool_figures(model, since)} | {starts} | "
        f"{restarts} | {writes} | {stats.seconds:.1f} | {active}/{len(model.world.units)} |"
    )


def _probe_row(model: Model, workers: int) -> str:
    """Add one worker; report what worker/0 and its cni subordinate ran because of it."""
    watched = "worker/0"
    sub = next(u.name for u in model.world.units.values() if u.principal == watched)
    before = model.counters()
    model.add_unit("worker", settle=False)
    stats = model.settle()
    after = model.counters()

    def delta(unit: str, key: str) -> int:
        return after[unit][key] - before[unit][key]

    return (
        f"| {workers} -> {workers + 1} | {delta(watched, 'hooks')} | {delta(sub, 'hooks')} | "
        f"{delta(watched, 'files_written')} | "
        f"{delta(watched, 'services_restarted') + delta(sub, 'services_restarted')} | "
        f"{stats.hooks} | {stats.seconds:.1f} |"
    )


def run(max_workers: int, directory: Path) -> str:
    """Run the benchmark in ``directory``; return the markdown section."""
    bundles = directory / "bundles"
    bundles.mkdir(parents=True)
    bundle = bundles / "k8s.yaml"
    shutil.copy(ROOT / "bundles" / "k8s.yaml", bundle)  # packed charms absent: run from source
    model = Model.create(directory / "model")
    model.deploy(bundle, (), ROOT / "charms", settle=False)
    steps = [_step_row("deploy bundles/k8s.yaml (2 workers)", model, model.settle())]
    tool_total = sum(calls for _, _, calls in model.tool_log)
    probes = [_probe_row(model, 2)]
    workers = len(model.units_of("worker"))
    for target in (10, 50):
        if target > max_workers:
            break
        model.add_unit("worker", target - workers, settle=False)
        since = len(model.tool_log)
        steps.append(
            _step_row(
                f"add-unit worker -n {target - workers} ({target} workers)",
                model,
                model.settle(),
                since,
            )
        )
        probes.append(_probe_row(model, target))
        workers = target + 1
    since = len(model.tool_log)
    idle = model.run_everywhere("update-status")
    assert idle is not None
    idle_tools = [calls for _, _, calls in model.tool_log[since:]]
    model.destroy()

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION,
        "",
        f"<!-- written by tools/bench_model.py on {stamp}; do not edit by hand -->",
        "",
        f"Measured with `tools/bench_model.py` ({stamp}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs): the real charms in the offline model, one hook at a time, "
        "services recorded (no processes). Hooks per unit are mean/max per application; "
        "starts, restarts and file writes are summed over all units (from each unit's "
        "`Host.stats`). Hook tools are the Juju hook commands ops ran (relation-get, "
        "relation-set, config-get, is-leader, status-set, juju-log, ...), each a process and "
        "a controller round trip under Juju: mean/max per hook per application "
        "(kaji.model.hooktools).",
        "",
        "| step | hooks | hooks per unit (mean/max) | hook tools per hook (mean/max) | starts "
        "| restarts | files written | seconds | active |",
        "|---|---|---|---|---|---|---|---|---|",
        *steps,
        "",
        "What an existing worker pays when one more worker joins (worker/0 and its cni "
        "subordinate; the cni peers need every node's subnet, so pod routing is O(n) "
        "cluster-wide but O(1) per existing node):",
        "",
        "| workers | worker/0 hooks | its cni hooks | worker/0 files written | restarts "
        "| all hooks | seconds |",
        "|---|---|---|---|---|---|---|",
        *probes,
        "",
        f"A settled cluster of {len(idle.per_unit)} units then ran update-status everywhere: "
        f"{idle.hooks} hooks, {idle.total('files_written')} file writes, "
        f"{idle.total('services_restarted')} restarts, {idle.seconds:.1f} s; "
        f"{sum(idle_tools)} hook-tool calls ({max(idle_tools, default=0)} at most in one "
        f"hook). Deploying took {tool_total} hook-tool calls in all.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the offline-model section of ``path``, leaving the rest alone."""
    text = path.read_text() if path.exists() else "# Performance\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text.rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write its section; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-workers", type=int, default=50, help="largest scale step")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args(argv)
    import scenario.logger

    logging.getLogger(scenario.logger.logger.name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="kaji-bench-", dir="/tmp") as tmp:
        section = run(args.max_workers, Path(tmp))
    write_section(args.output, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())

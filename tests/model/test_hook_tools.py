"""Hook-tool accounting: what a real controller would see ops run, per hook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kaji.model.engine import Model
from kaji.model.status import status_data

from .conftest import ROOT, TEST_BUNDLES


def _tools(model: Model, unit: str) -> dict[str, int]:
    counters = model.world.units[unit].counters
    return {k.removeprefix("tool:"): v for k, v in counters.items() if k.startswith("tool:")}


def test_one_hook_counts_the_tools_ops_really_runs(model_dir: Path) -> None:
    model = Model.create(model_dir)
    model.deploy(TEST_BUNDLES / "tools.yaml")
    before = _tools(model, "tools/0")
    model.run_everywhere("update-status")
    after = _tools(model, "tools/0")
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in after if after[k] != before.get(k)}
    # The charm called is_leader() three times, read config three times, set two keys.
    assert moved["is-leader"] == 1  # ops caches leadership for the 30 s lease
    assert moved["config-get"] == 1  # ops reads every option at once
    assert moved["relation-set"] == 2  # one relation-set per key
    assert moved["relation-ids"] == 1
    assert moved["relation-get"] == 1  # its own bag, read once
    assert model.tool_log[-1] == ("tools/0", "update-status", sum(moved.values()))


def test_status_json_has_mean_and_max_per_unit_and_application(model_dir: Path) -> None:
    model = Model.create(model_dir)
    model.deploy(TEST_BUNDLES / "test.yaml")
    model.save()
    data = status_data(model)
    for name, unit in data["units"].items():
        tools = unit["hook_tools"]
        assert tools["hooks"] == model.world.units[name].counters["hooks"] > 0
        assert tools["calls"] == sum(tools["by_tool"].values()) > 0
        assert tools["max_per_hook"] >= tools["mean_per_hook"] > 0
        assert tools["by_tool"]["status-set"] >= 1
    provider = data["applications"]["provider"]["hook_tools"]
    units = [data["units"][u]["hook_tools"] for u in ("provider/0", "provider/1")]
    assert provider["calls"] == sum(u["calls"] for u in units)
    assert provider["max_per_hook"] == max(u["max_per_hook"] for u in units)
    assert provider["by_tool"]["secret-grant"] >= 1
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "kaji.model",
            "status",
            "--format",
            "json",
            "--model-dir",
            str(model_dir),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "lib")},
        check=True,
    )
    assert json.loads(cli.stdout)["applications"]["provider"]["hook_tools"] == provider

"""A settled unit's update-status is cheap; changed inputs, stopped services, age reconcile."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import subprocess
import sys

import pytest
from builders import CHARM_ROOT, CONTEXT_ROOT, base_state, cni_bag, service_argv, with_relation
from kaji_control_plane import literals
from ops import testing

import charm
from kaji.host import RecordingManager

RECORD = "var/lib/kaji/control-plane/reconciled.json"

_CHILD = """
import json, pickle, sys
from ops import testing
from charm import ControlPlaneCharm
state = pickle.loads(sys.stdin.buffer.read())
ctx = testing.Context(ControlPlaneCharm, charm_root=sys.argv[1], app_name="control-plane")
with ctx(ctx.on.update_status(), state) as manager:
    out = manager.run()
    stats = manager.charm.host.stats.as_dict()
print(json.dumps({
    "crypto": sorted(m for m in sys.modules if m.startswith("cryptography")),
    "stats": stats,
    "status": [out.unit_status.name, out.unit_status.message],
}))
"""


@pytest.fixture
def settled(cluster, root: pathlib.Path) -> testing.State:
    """A leader unit that reached active with etcd, cni and peers; its record is written."""
    state = cluster.converge(base_state())
    assert state.unit_status.name == "active"
    assert (root / RECORD).exists()
    return state


@pytest.fixture
def reconciles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts full reconciles."""
    calls: list[str] = []
    original = charm.ControlPlaneCharm.reconcile

    def counting(self: charm.ControlPlaneCharm) -> None:
        calls.append("reconcile")
        original(self)

    monkeypatch.setattr(charm.ControlPlaneCharm, "reconcile", counting)
    return calls


def test_settled_update_status_imports_no_crypto_writes_nothing_restarts_nothing(
    settled: testing.State, root: pathlib.Path
) -> None:
    env = {**os.environ, "PYTHONPATH": f"{CHARM_ROOT / 'src'}:{CHARM_ROOT.parents[1] / 'lib'}"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(CONTEXT_ROOT)],
        input=pickle.dumps(settled),
        capture_output=True,
        env=env,
        check=True,
        timeout=120,
    )
    result = json.loads(child.stdout.decode().strip().splitlines()[-1])
    assert result["crypto"] == []
    assert result["stats"]["files_written"] == 0
    assert result["stats"]["services_restarted"] == result["stats"]["services_started"] == 0
    # The remembered status is the one the last full reconcile reached, byte for byte.
    assert result["status"] == [settled.unit_status.name, settled.unit_status.message]
    record = json.loads((root / RECORD).read_text())
    assert record["status"] == result["status"]
    assert oct((root / RECORD).stat().st_mode & 0o777) == "0o600"


def test_settled_update_status_skips_the_reconcile(
    ctx, settled: testing.State, reconciles: list[str]
) -> None:
    out = ctx.run(ctx.on.update_status(), settled)
    assert reconciles == []
    assert out.unit_status == settled.unit_status


def test_changed_config_reconciles(
    ctx, settled: testing.State, root: pathlib.Path, reconciles: list[str]
) -> None:
    changed = dataclasses.replace(settled, config={"service-cidr": "10.152.0.0/24"})
    ctx.run(ctx.on.update_status(), changed)
    assert reconciles == ["reconcile"]
    assert "--service-cluster-ip-range=10.152.0.0/24" in service_argv(root, "kube-apiserver")


def test_changed_relation_data_reconciles(
    ctx, settled: testing.State, reconciles: list[str]
) -> None:
    cni = settled.get_relations("cni")[0]
    moved = dataclasses.replace(
        cni, remote_unit_data=cni_bag(cluster_cidr="10.2.0.0/16", pod_subnet="10.2.0.0/24")
    )
    ctx.run(ctx.on.update_status(), with_relation(settled, moved))
    assert reconciles == ["reconcile"]


def test_stopped_service_reconciles_and_starts_it(
    ctx, settled: testing.State, root: pathlib.Path, reconciles: list[str]
) -> None:
    RecordingManager(root / "var/lib/kaji/services").stop("kube-scheduler")
    ctx.run(ctx.on.update_status(), settled)
    assert reconciles == ["reconcile"]
    assert RecordingManager(root / "var/lib/kaji/services").is_running("kube-scheduler")


def test_full_reconcile_after_the_maximum_age_then_cheap_again(
    ctx, settled: testing.State, root: pathlib.Path, reconciles: list[str]
) -> None:
    record = json.loads((root / RECORD).read_text())
    record["at"] -= literals.FULL_RECONCILE_INTERVAL + 10
    (root / RECORD).write_text(json.dumps(record))
    state = ctx.run(ctx.on.update_status(), settled)
    assert reconciles == ["reconcile"]
    ctx.run(ctx.on.update_status(), state)
    assert reconciles == ["reconcile"]  # the clock restarted


def test_a_certificate_due_for_renewal_reconciles(
    ctx, settled: testing.State, root: pathlib.Path, reconciles: list[str]
) -> None:
    record = json.loads((root / RECORD).read_text())
    # The earliest due time of the certificates this leader looks after: two thirds into
    # the life of the shortest-lived one, far in the future right after issuing.
    assert record["recheck-after"] > record["at"] + literals.FULL_RECONCILE_INTERVAL
    record["recheck-after"] = record["at"] - 1
    (root / RECORD).write_text(json.dumps(record))
    ctx.run(ctx.on.update_status(), settled)
    assert reconciles == ["reconcile"]


def test_a_second_full_reconcile_leaves_the_record_untouched(
    ctx, settled: testing.State, root: pathlib.Path
) -> None:
    before = (root / RECORD).read_bytes()
    with ctx(ctx.on.config_changed(), settled) as manager:
        manager.run()
        assert manager.charm.host.stats.files_written == 0
    assert (root / RECORD).read_bytes() == before


def test_peer_joining_changes_the_inputs(
    ctx, settled: testing.State, tmp_path: pathlib.Path, reconciles: list[str]
) -> None:
    from builders import peer_bag

    bag, _ = peer_bag(tmp_path / "cp-1", "cp-1", ["10.0.0.21"])
    peer = settled.get_relations("cluster")[0]
    joined = dataclasses.replace(peer, peers_data={1: bag})
    ctx.run(ctx.on.update_status(), with_relation(settled, joined))
    assert reconciles == ["reconcile"]


def test_record_lives_in_the_workload_state_dir() -> None:
    """The record lives in the workload's state directory (charm.py names it from literals)."""
    assert f"{literals.STATE_DIR}/reconciled.json" == literals.RECONCILED_FILE

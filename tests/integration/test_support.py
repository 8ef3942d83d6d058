"""The integration tests' own logic, checked without a controller (marked offline: never skipped).

Overlay selection by cloud type, the constraints the bundle and the LXD overlay carry, what
counts as a settled model, and what a timed-out wait reports: a fake ``ops_test`` answers the
``juju`` calls with canned ``juju status`` / ``juju show-model`` output.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import integration_support as support
import pytest
import yaml
from integration_support import (
    BUNDLE,
    HA_OVERLAY,
    LXD_OVERLAY,
    model_provider_type,
    overlays_for,
    parse_constraints,
    settle_failure,
    size_mib,
    unsettled,
)

from kaji.model.bundle import load_bundle, merge_overlay

pytestmark = pytest.mark.offline

PRINCIPALS = ("etcd", "control-plane", "worker")
NODE_KEYS = ("cores", "mem", "root-disk")


def show_model(provider: str) -> dict[str, Any]:
    """``juju show-model --format json`` for a model named t on a cloud of that type."""
    return {
        "t": {
            "name": "admin/t",
            "short-name": "t",
            "model-type": "iaas",
            "controller-name": "kaji",
            "cloud": "localhost" if provider == "lxd" else "aws",
            "type": provider,
            "life": "alive",
        }
    }


def unit(workload: str = "active", agent: str = "idle", message: str = "", **extra: Any) -> dict:
    return {
        "workload-status": {"current": workload, "message": message},
        "juju-status": {"current": agent},
        **extra,
    }


def status(
    *,
    workers: int = 2,
    worker0: dict[str, Any] | None = None,
    cni_on_last_worker: bool = True,
) -> dict[str, Any]:
    """``juju status --format json`` of the default bundle, settled unless told otherwise."""
    cni = iter(range(100))

    def principal(**overrides: Any) -> dict[str, Any]:
        return {**unit(subordinates={f"cni/{next(cni)}": unit()}), **overrides}

    worker_units = {f"worker/{n}": principal() for n in range(workers)}
    if worker0 is not None:
        worker_units["worker/0"] = {**worker_units["worker/0"], **worker0}
    if not cni_on_last_worker:
        worker_units[f"worker/{workers - 1}"].pop("subordinates")
    return {
        "model": {"name": "t", "type": "iaas"},
        "applications": {
            "etcd": {"units": {f"etcd/{n}": unit() for n in range(3)}},
            "control-plane": {"units": {"control-plane/0": principal()}},
            "worker": {"units": worker_units},
            "cni": {"subordinate-to": ["control-plane", "worker"]},
        },
    }


# --- constraints ---------------------------------------------------------------------------


def test_parse_constraints_reads_juju_syntax() -> None:
    assert parse_constraints("virt-type=virtual-machine cores=2 mem=4G root-disk=20G") == {
        "virt-type": "virtual-machine",
        "cores": "2",
        "mem": "4G",
        "root-disk": "20G",
    }
    assert parse_constraints("cpu-cores=4") == {"cores": "4"}
    assert size_mib("4G") == 4096
    assert size_mib("512M") == 512
    assert size_mib("2048") == 2048


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("memory=4G", "unknown constraint 'memory'"),
        ("virt_type=virtual-machine", "unknown constraint 'virt_type'"),
        ("cores=2 cpu-cores=4", "'cores' given twice"),
        ("cores=two", "not a whole number"),
        ("mem=4GB", "not a size"),
        ("root-disk=", "not a size"),
        ("virt-type=vm", "LXD knows"),
        ("cores", "not key=value"),
    ],
)
def test_parse_constraints_refuses_what_juju_would(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_constraints(text)


def bundle_data(*overlays: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(BUNDLE.read_text(encoding="utf-8"))
    for overlay in overlays:
        data = merge_overlay(data, yaml.safe_load(overlay.read_text(encoding="utf-8")))
    return data


def test_bundle_gives_every_node_cores_memory_and_disk() -> None:
    apps = bundle_data()["applications"]
    for app in PRINCIPALS:
        constraints = parse_constraints(apps[app]["constraints"])
        assert set(NODE_KEYS) <= set(constraints), f"{app}: {constraints}"
        assert int(constraints["cores"]) >= 2, f"{app}: kubelet and etcd want 2 cores"
        assert size_mib(constraints["mem"]) >= 2048, app
        assert "virt-type" not in constraints, f"{app}: virt-type belongs in the LXD overlay"
    assert size_mib(parse_constraints(apps["worker"]["constraints"])["mem"]) >= 4096
    assert "constraints" not in apps["cni"], "a subordinate runs on its principal's machine"


def test_lxd_overlay_makes_every_node_a_vm_without_shrinking_it() -> None:
    base = bundle_data()["applications"]
    merged = bundle_data(LXD_OVERLAY)["applications"]
    for app in PRINCIPALS:
        wanted = parse_constraints(base[app]["constraints"])
        got = parse_constraints(merged[app]["constraints"])
        assert got.get("virt-type") == "virtual-machine", f"{app}: {got}"
        # An overlay's constraints replace the bundle's string: every size must be restated.
        for key in NODE_KEYS:
            assert key in got, f"{app}: the LXD overlay drops {key} ({got})"
        assert int(got["cores"]) >= int(wanted["cores"]), app
        for key in ("mem", "root-disk"):
            assert size_mib(got[key]) >= size_mib(wanted[key]), f"{app} {key}"
    assert "constraints" not in merged["cni"]


@pytest.mark.parametrize(
    "overlays", [(), (LXD_OVERLAY,), (LXD_OVERLAY, HA_OVERLAY)], ids=["plain", "lxd", "lxd+ha"]
)
def test_bundle_check_accepts_the_bundle_with_its_overlays(overlays: tuple[Path, ...]) -> None:
    bundle = load_bundle(BUNDLE, overlays)
    assert {"etcd", "control-plane", "worker", "cni"} <= set(bundle.applications)


# --- cloud type and overlays ---------------------------------------------------------------


def test_provider_type_is_read_from_show_model() -> None:
    assert model_provider_type(show_model("lxd")) == "lxd"
    assert model_provider_type(show_model("ec2")) == "ec2"
    with pytest.raises(AssertionError, match="no provider type"):
        model_provider_type({"t": {"name": "admin/t", "model-type": "iaas"}})


def test_overlays_for_adds_the_lxd_overlay_only_on_lxd() -> None:
    assert overlays_for("lxd") == [LXD_OVERLAY]
    assert overlays_for("lxd", [HA_OVERLAY]) == [LXD_OVERLAY, HA_OVERLAY]
    assert overlays_for("lxd", [LXD_OVERLAY]) == [LXD_OVERLAY]
    for provider in ("ec2", "openstack", "maas", "manual"):
        assert overlays_for(provider, [HA_OVERLAY]) == [HA_OVERLAY]
    assert LXD_OVERLAY.is_file()


class FakeOpsTest:
    """Just enough of pytest-operator's OpsTest for deploy_bundle and wait_active."""

    def __init__(self, tmp_path: Path, provider: str, statuses: Iterator[dict[str, Any]]):
        self.model = object()
        self.model_full_name = "kaji:t"
        self.tmp_path = tmp_path
        self.provider = provider
        self.statuses = statuses
        self.calls: list[tuple[str, ...]] = []

    async def juju(self, *args: str, **_: Any) -> tuple[int, str, str]:
        self.calls.append(args)
        if args[0] == "show-model":
            return 0, json.dumps(show_model(self.provider)), ""
        if args[:3] == ("status", "--format", "json"):
            return 0, json.dumps(next(self.statuses)), ""
        if args[0] == "status":
            return 0, "Model  Controller  Cloud/Region\nt      kaji        localhost\n", ""
        return 0, "", ""


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real waiting: settled means settled twice in a row."""
    monkeypatch.setattr(support, "STATUS_INTERVAL", 0)
    monkeypatch.setattr(support, "IDLE_PERIOD", 0)


def fake_charms(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.charm" for name in support.CHARM_NAMES}
    for path in paths.values():
        path.write_bytes(b"")
    return paths


@pytest.mark.parametrize(
    ("provider", "expected"),
    [("lxd", [LXD_OVERLAY, HA_OVERLAY]), ("ec2", [HA_OVERLAY])],
)
def test_deploy_bundle_uses_the_lxd_overlay_when_the_cloud_is_lxd(
    tmp_path: Path, quick: None, provider: str, expected: list[Path]
) -> None:
    ops_test: Any = FakeOpsTest(tmp_path, provider, iter([status()] * 3))
    asyncio.run(support.deploy_bundle(ops_test, fake_charms(tmp_path), HA_OVERLAY))
    (deploy,) = [call for call in ops_test.calls if call[0] == "deploy"]
    overlays = [Path(deploy[i + 1]) for i, arg in enumerate(deploy) if arg == "--overlay"]
    assert overlays == expected


# --- settling ------------------------------------------------------------------------------


def test_a_settled_model_has_nothing_unsettled() -> None:
    assert unsettled(status()) == []
    assert unsettled(status(workers=3), units={"worker": 3}) == []


def test_unsettled_names_each_unit_and_why() -> None:
    blocked = unit("blocked", "idle", "download of kubernetes-node failed: timed out")
    assert unsettled(status(worker0=blocked)) == [
        "worker/0: blocked/idle: download of kubernetes-node failed: timed out"
    ]
    executing = unit("maintenance", "executing", "installing containerd")
    assert unsettled(status(worker0=executing)) == [
        "worker/0: maintenance/executing: installing containerd"
    ]
    error = unit("error", "idle", 'hook failed: "install"')
    assert unsettled(status(worker0=error)) == ['worker/0: error/idle: hook failed: "install"']


def test_unsettled_waits_for_unit_counts_apps_and_subordinates() -> None:
    assert unsettled(status(workers=2), units={"worker": 3}) == ["worker: 2 units, waiting for 3"]
    assert unsettled(status(cni_on_last_worker=False)) == ["worker/1: no cni subordinate yet"]
    missing = status()
    del missing["applications"]["etcd"]
    assert unsettled(missing) == ["etcd: not in the model"]


def test_a_subordinate_that_is_not_active_is_unsettled() -> None:
    data = status()
    subs = data["applications"]["worker"]["units"]["worker/1"]["subordinates"]
    (name,) = subs
    subs[name] = unit("waiting", "idle", "waiting for worker/1's node name")
    assert unsettled(data) == [f"{name}: waiting/idle: waiting for worker/1's node name"]


def test_wait_active_outlasts_a_transient_blocked_status(tmp_path: Path, quick: None) -> None:
    """A retried download blocks a unit for a while: the wait carries on until it is active."""
    blocked = unit("blocked", "idle", "download failed: connection reset; retrying")
    statuses = iter([status(worker0=blocked)] * 3 + [status()] * 3)
    ops_test: Any = FakeOpsTest(tmp_path, "lxd", statuses)
    asyncio.run(support.wait_active(ops_test, timeout=60))


def test_wait_active_times_out_with_juju_status(
    tmp_path: Path, quick: None, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = unit("blocked", "idle", "release-mirror: not an https URL")
    ops_test: Any = FakeOpsTest(tmp_path, "lxd", iter([status(worker0=blocked)] * 1000))
    with pytest.raises(AssertionError) as raised:
        asyncio.run(support.wait_active(ops_test, timeout=0))
    message = str(raised.value)
    assert "worker/0: blocked/idle: release-mirror: not an https URL" in message
    assert "juju status:\nModel  Controller" in message
    assert ("status", "--relations") in ops_test.calls
    assert message in capsys.readouterr().out


def test_settle_failure_lists_problems_then_the_status() -> None:
    text = settle_failure(600, ["etcd/1: waiting/idle: waiting for peers"], "Model  t\n")
    assert text.splitlines() == [
        "the model did not settle within 600s:",
        "  etcd/1: waiting/idle: waiting for peers",
        "",
        "juju status:",
        "Model  t",
    ]

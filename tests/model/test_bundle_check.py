"""The bundle check: the real bundle passes, a broken one is refused with every problem listed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from kaji.model.bundle import BundleError, load_bundle

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "k8s.yaml"
HA = ROOT / "bundles" / "overlays" / "ha.yaml"


def test_default_bundle_is_valid_against_the_charm_sources() -> None:
    bundle = load_bundle(BUNDLE)
    assert {a: app.units for a, app in bundle.applications.items()} == {
        "etcd": 3,
        "control-plane": 1,
        "worker": 2,
        "cni": 0,
    }
    assert {str(r) for r in bundle.relations} == {
        "etcd:db control-plane:etcd",
        "control-plane:kube-control worker:kube-control",
        "control-plane:cni cni:cni",  # provider first: the principals provide kaji-cni
        "worker:cni cni:cni",
    }
    assert {r.interface for r in bundle.relations if r.container_scoped} == {"kaji-cni"}
    assert bundle.base == "ubuntu@24.04"


def test_ha_overlay_gives_three_control_planes_and_keeps_the_rest() -> None:
    bundle = load_bundle(BUNDLE, [HA])
    assert bundle.applications["control-plane"].units == 3
    assert bundle.applications["worker"].units == 2
    assert len(bundle.relations) == 4


def _bundle(tmp_path: Path, data: dict) -> Path:
    bundles = tmp_path / "bundles"
    bundles.mkdir(exist_ok=True)
    path = bundles / "b.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def charms_dir(tmp_path: Path) -> Path:
    """The real charm sources plus an impostor whose db endpoint speaks another interface."""
    charms = tmp_path / "charms"
    for src in (ROOT / "charms").glob("*/charmcraft.yaml"):
        (charms / src.parent.name).mkdir(parents=True)
        shutil.copy(src, charms / src.parent.name / "charmcraft.yaml")
    impostor = charms / "impostor"
    impostor.mkdir()
    (impostor / "charmcraft.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "impostor-db",
                "summary": "an impostor",
                "description": "speaks mysql on db",
                "provides": {"db": {"interface": "mysql"}},
                "config": {"options": {"port": {"type": "int", "default": 1}}},
            }
        )
    )
    return charms


def test_broken_bundle_is_refused_with_every_problem(tmp_path: Path, charms_dir: Path) -> None:
    path = _bundle(
        tmp_path,
        {
            "series": "jammy",
            "default-base": "ubuntu@24.04",
            "applications": {
                "etcd": {"charm": "../build/kaji-etcd.charm", "num_units": 3},
                "db": {"charm": "../build/impostor-db.charm", "options": {"port": "x", "nope": 1}},
                "control-plane": {"charm": "../build/kaji-control-plane.charm", "num_units": 1},
                "worker": {"charm": "../build/kaji-worker.charm", "num_units": 1},
                "cni": {"charm": "../build/kaji-cni.charm", "num_units": 2},
                "ghost": {"charm": "../build/kaji-ghost.charm"},
            },
            "relations": [
                ["etcd:database", "control-plane:etcd"],
                ["db:db", "control-plane:etcd"],
                ["cni:cni", "worker:cni"],
                ["etcd:cluster", "etcd:cluster"],
                ["worker:kube-control", "control-plane:kube-control"],
                ["control-plane:kube-control", "worker:kube-control"],
            ],
        },
    )
    with pytest.raises(BundleError) as caught:
        load_bundle(path, charms_dir=charms_dir)
    text = str(caught.value)
    expected = [
        "unknown top-level key 'series'",
        "kaji-etcd has no endpoint 'database'",
        "interfaces differ (mysql vs kaji-etcd)",
        "option 'port' must be int",
        "option 'nope' is not an option of impostor-db",
        "kaji-cni is a subordinate; it takes no num_units",
        "peer endpoints are related by Juju itself",
        "is listed twice",
        "neither packed",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert len(caught.value.problems) == len(expected)


def test_subordinate_without_principal_never_gets_a_unit(tmp_path: Path) -> None:
    path = _bundle(
        tmp_path,
        {
            "default-base": "ubuntu@24.04",
            "applications": {"cni": {"charm": str(ROOT / "build" / "kaji-cni.charm")}},
        },
    )
    with pytest.raises(BundleError, match="subordinate without a container-scoped relation"):
        load_bundle(path, charms_dir=ROOT / "charms")


def test_a_packed_charm_is_read_from_the_archive(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    meta = yaml.safe_load((ROOT / "charms" / "etcd" / "charmcraft.yaml").read_text())
    meta["provides"]["db"]["interface"] = "changed-in-the-archive"
    with zipfile.ZipFile(build / "kaji-etcd.charm", "w") as archive:
        archive.writestr("metadata.yaml", yaml.safe_dump(meta))
    path = _bundle(
        tmp_path,
        {
            "default-base": "ubuntu@24.04",
            "applications": {
                "etcd": {"charm": "../build/kaji-etcd.charm", "num_units": 1},
                "control-plane": {"charm": "../build/kaji-control-plane.charm"},
            },
            "relations": [["etcd:db", "control-plane:etcd"]],
        },
    )
    with pytest.raises(BundleError, match=r"interfaces differ \(changed-in-the-archive"):
        load_bundle(path, charms_dir=ROOT / "charms")


def test_cli_reports_problems_and_exits_nonzero(tmp_path: Path) -> None:
    path = _bundle(tmp_path, {"default-base": "focal", "applications": {}})
    env = {"PYTHONPATH": str(ROOT / "lib")}
    result = subprocess.run(
        [sys.executable, "-m", "kaji.model", "check", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "2 problem(s)" in result.stderr
    assert "default-base must be like ubuntu@24.04" in result.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "kaji.model", "check", str(BUNDLE)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "control-plane:kube-control" in ok.stdout
    assert "OK (4 applications, 4 relations)" in ok.stdout

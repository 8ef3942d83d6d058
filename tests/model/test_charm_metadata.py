"""Juju's own charm metadata check, on small bad charms from source and from .charm files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaji.model.bundle import BundleError, load_bundle
from kaji.model.engine import Model
from kaji.model.metadata import metadata_problems

ROOT = Path(__file__).resolve().parents[2]


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "summary": "s", "description": "d", **extra}


PRINCIPAL = _meta(
    "kaji-test-host",
    provides={"host": {"interface": "test-host", "scope": "container"}},
)
#: The mistake kaji-cni made: a subordinate whose container endpoint is under provides.
SUB_PROVIDES = _meta(
    "kaji-test-badsub",
    subordinate=True,
    provides={"host": {"interface": "test-host", "scope": "container"}},
)


def _write_source(charms: Path, directory: str, meta: dict[str, Any]) -> None:
    (charms / directory).mkdir(parents=True, exist_ok=True)
    (charms / directory / "charmcraft.yaml").write_text(yaml.safe_dump(meta))


def _write_packed(build: Path, meta: dict[str, Any]) -> None:
    build.mkdir(parents=True, exist_ok=True)
    config = meta.pop("config", None)
    with zipfile.ZipFile(build / f"{meta['name']}.charm", "w") as archive:
        archive.writestr("metadata.yaml", yaml.safe_dump(meta))
        if config is not None:
            archive.writestr("config.yaml", yaml.safe_dump(config))


def _bundle(tmp_path: Path, sub: str, sub_endpoint: str = "host") -> Path:
    bundles = tmp_path / "bundles"
    bundles.mkdir(exist_ok=True)
    path = bundles / "b.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "default-base": "ubuntu@24.04",
                "applications": {
                    "host": {"charm": "../build/kaji-test-host.charm", "num_units": 1},
                    "sub": {"charm": f"../build/{sub}.charm"},
                },
                "relations": [["host:host", f"sub:{sub_endpoint}"]],
            }
        )
    )
    return path


@pytest.mark.parametrize("packed", [False, True], ids=["source", "packed"])
def test_subordinate_without_container_requires_is_refused(tmp_path: Path, packed: bool) -> None:
    # Before: the bundle check accepted a subordinate whose container endpoint it provides.
    charms = tmp_path / "charms"
    _write_source(charms, "host", dict(PRINCIPAL))
    if packed:
        _write_packed(tmp_path / "build", dict(SUB_PROVIDES))
    else:
        _write_source(charms, "badsub", dict(SUB_PROVIDES))
    with pytest.raises(BundleError) as caught:
        load_bundle(_bundle(tmp_path, "kaji-test-badsub"), charms_dir=charms)
    assert any(
        'subordinate charm "kaji-test-badsub" lacks "requires" relation with container scope' in p
        for p in caught.value.problems
    ), caught.value.problems


def test_every_metadata_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = _meta(
        "kaji-test-everything-wrong",
        subordinate=True,
        series=["jammy"],
        provides={
            "juju-admin": {"interface": "x"},
            "api": {"interface": "juju-api"},
            "Bad_Name": "thing",
            "shared": "one",
        },
        requires={
            "juju-info": {"interface": "juju-info", "scope": "host"},
            "shared": "two",
            "db": {"interface": "db", "limit": "many"},
        },
        peers={"ring": {"interface": "ring", "scope": "container"}},
        **{"extra-bindings": {"db": None}},
        storage={"data": {"type": "block", "location": "/srv"}},
        config={"options": {"port": {"type": "integer"}, "n": {"type": "int", "default": "x"}}},
    )
    problems = metadata_problems(bad, "charm bad")
    expected = [
        "series is not valid in charm metadata v2",
        'using a reserved relation name: "juju-admin"',
        'relation "api" using a reserved interface: "juju-api"',
        "relation 'Bad_Name' (provides): invalid relation name",
        "relation 'juju-info' (requires): scope must be global or container",
        # With scope refused (global), juju-info is no longer the exempt container requires.
        'using a reserved relation name: "juju-info"',
        'using a duplicated relation name: "shared"',
        "relation 'db' (requires): limit must be a whole number",
        "peer relation 'ring' has container scope",
        "relation names (db) cannot be used in extra bindings",
        'lacks "requires" relation with container scope',
        'storage "data": location may not be specified for "type: block"',
        "option 'port' has unknown type 'integer'",
        "invalid config default: option 'n' expected int",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert len(problems) == len(expected), problems
    assert all(p.startswith("charm bad: ") for p in problems)


def test_juju_info_container_requires_of_a_subordinate_is_allowed() -> None:
    meta = _meta(
        "kaji-test-logger",
        subordinate=True,
        requires={"juju-info": {"interface": "juju-info", "scope": "container"}},
    )
    assert metadata_problems(meta, "logger") == []


@pytest.mark.parametrize("packed", [False, True], ids=["source", "packed"])
def test_cli_check_refuses_bad_metadata(tmp_path: Path, packed: bool) -> None:
    charms = tmp_path / "charms"
    _write_source(charms, "host", dict(PRINCIPAL))
    sub = _meta(
        "kaji-test-reserved",
        subordinate=True,
        requires={"host": {"interface": "test-host", "scope": "container"}},
        peers={"juju": "ring"},
    )
    if packed:
        _write_packed(tmp_path / "build", sub)
    else:
        _write_source(charms, "reserved", sub)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kaji.model",
            "check",
            str(_bundle(tmp_path, "kaji-test-reserved")),
            "--charms-dir",
            str(charms),
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "lib")},
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert 'charm "kaji-test-reserved" using a reserved relation name: "juju"' in result.stderr


def test_deploy_refuses_bad_metadata_before_any_hook(tmp_path: Path) -> None:
    charms = tmp_path / "charms"
    _write_source(charms, "host", dict(PRINCIPAL))
    _write_source(charms, "badsub", dict(SUB_PROVIDES))
    model = Model.create(tmp_path / "model")
    try:
        with pytest.raises(BundleError, match='lacks "requires" relation'):
            model.deploy(_bundle(tmp_path, "kaji-test-badsub"), (), charms)
        assert model.world.units == {}
    finally:
        model.destroy()


def test_the_kaji_and_test_charms_pass_the_check() -> None:
    sources = sorted(ROOT.glob("charms/*/charmcraft.yaml")) + sorted(
        ROOT.glob("tests/model/charms/*/charmcraft.yaml")
    )
    assert len(sources) >= 8
    for source in sources:
        assert metadata_problems(yaml.safe_load(source.read_text()), str(source)) == []

"""Checks on the charms that `tox -e pack` (tools/pack.py) leaves in build/.

Each application of bundles/k8s.yaml names its charm file; the packed charm must be a
complete machine charm: dispatch and hooks, the charm code, the shared lib/kaji (identical to
the source tree's), metadata whose endpoints serve the bundle's relations, and a venv holding
every requirement built for the Python of the charm's base.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "k8s.yaml"
BUILD = ROOT / "build"
BASE_PYTHON = {"22.04": (3, 10), "24.04": (3, 12)}
"""The CPython each Ubuntu base runs charms with."""
ENDPOINT_KINDS = ("provides", "requires", "peers")

pytestmark = pytest.mark.skipif(
    not any(BUILD.glob("*.charm")),
    reason="no packed charms in build/: run `tox -e pack` first",
)


def _bundle() -> dict[str, Any]:
    return yaml.safe_load(BUNDLE.read_text(encoding="utf-8"))


def _charm_files() -> dict[str, Path]:
    """Application name -> the .charm file the bundle deploys it from."""
    apps = _bundle()["applications"]
    return {app: (BUNDLE.parent / spec["charm"]).resolve() for app, spec in apps.items()}


def _source_dirs() -> dict[str, Path]:
    """Charm name -> its source directory under charms/."""
    result = {}
    for path in sorted((ROOT / "charms").glob("*/charmcraft.yaml")):
        name = yaml.safe_load(path.read_text(encoding="utf-8"))["name"]
        result[name] = path.parent
    return result


APPS = sorted(_charm_files())


class PackedCharm:
    """Read access to one .charm archive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path)
        self.names = set(self.zip.namelist())

    def text(self, name: str) -> str:
        return self.zip.read(name).decode("utf-8")

    def yaml(self, name: str) -> Any:
        return yaml.safe_load(self.text(name))

    def metadata(self) -> dict[str, Any]:
        """The charm's metadata: metadata.yaml, else the packed charmcraft.yaml."""
        for name in ("metadata.yaml", "charmcraft.yaml"):
            if name in self.names:
                return self.yaml(name)
        raise AssertionError(f"{self.path.name} holds neither metadata.yaml nor charmcraft.yaml")

    def mode(self, name: str) -> int:
        return self.zip.getinfo(name).external_attr >> 16

    def venv_tops(self) -> set[str]:
        return {n.split("/")[1] for n in self.names if n.startswith("venv/") and n.count("/") >= 1}


@pytest.fixture(scope="module")
def charms() -> Iterator[dict[str, PackedCharm]]:
    """Every application's packed charm, opened once."""
    opened: dict[str, PackedCharm] = {}
    for app, path in _charm_files().items():
        assert path.is_file(), f"bundle application {app!r} wants {path}, which was not packed"
        opened[app] = PackedCharm(path)
    yield opened
    for charm in opened.values():
        charm.zip.close()


def _source_dir(charm: PackedCharm) -> Path:
    name = charm.metadata()["name"]
    sources = _source_dirs()
    assert name in sources, f"{charm.path.name} is charm {name!r}, not one under charms/"
    return sources[name]


def test_bundle_names_a_stable_build_file_per_application() -> None:
    files = _charm_files()
    assert set(files) == {"etcd", "control-plane", "worker", "cni"}
    for app, path in files.items():
        assert path == BUILD / f"kaji-{app}.charm", (app, path)


@pytest.mark.parametrize("app", APPS)
def test_charm_is_named_after_its_file(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    assert charm.path.name == f"{charm.metadata()['name']}.charm"


@pytest.mark.parametrize("app", APPS)
def test_dispatch_runs_the_packed_charm_code(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    for required in ("dispatch", "src/charm.py", "manifest.yaml"):
        assert required in charm.names, f"{charm.path.name} lacks {required}"
    dispatch = charm.text("dispatch")
    assert "PYTHONPATH=lib:venv" in dispatch
    entry = re.search(r"exec \./(\S+)", dispatch)
    assert entry, dispatch
    assert entry.group(1) in charm.names
    assert charm.mode("dispatch") & stat.S_IXUSR
    assert charm.mode(entry.group(1)) & stat.S_IXUSR, f"{entry.group(1)} is not executable"
    for hook in ("install", "start", "upgrade-charm"):
        assert f"hooks/{hook}" in charm.names


@pytest.mark.parametrize("app", APPS)
def test_shared_library_is_packed_as_in_the_tree(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    assert "lib/kaji/__init__.py" in charm.names
    assert "lib/kaji/pki.py" in charm.names
    source = ROOT / "lib" / "kaji"
    expected = {
        f"lib/kaji/{p.relative_to(source).as_posix()}": p
        for p in source.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    packed = {n for n in charm.names if n.startswith("lib/kaji/") and not n.endswith("/")}
    assert not [n for n in packed if "__pycache__" in n or n.endswith(".pyc")]
    assert set(expected) <= packed, f"missing: {sorted(set(expected) - packed)}"
    stale = [
        name
        for name, path in expected.items()
        if hashlib.sha256(charm.zip.read(name)).digest()
        != hashlib.sha256(path.read_bytes()).digest()
    ]
    assert not stale, f"{charm.path.name} is older than lib/kaji ({stale}): run `tox -e pack`"


@pytest.mark.parametrize("app", APPS)
def test_packed_metadata_matches_the_source(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    packed = charm.metadata()
    source = yaml.safe_load((_source_dir(charm) / "charmcraft.yaml").read_text(encoding="utf-8"))
    for kind in ENDPOINT_KINDS:
        assert packed.get(kind, {}) == source.get(kind, {}), kind
    assert bool(packed.get("subordinate")) == bool(source.get("subordinate"))
    manifest = charm.yaml("manifest.yaml")
    assert [(b["name"], b["channel"]) for b in manifest["bases"]] == [("ubuntu", "24.04")]


def _endpoint(charm: PackedCharm, endpoint: str) -> tuple[str, dict[str, Any]]:
    metadata = charm.metadata()
    for kind in ENDPOINT_KINDS:
        spec = (metadata.get(kind) or {}).get(endpoint)
        if spec is not None:
            return kind, spec
    raise AssertionError(f"{charm.path.name} has no endpoint {endpoint!r}")


def test_bundle_relations_join_compatible_packed_endpoints(
    charms: dict[str, PackedCharm],
) -> None:
    relations = _bundle()["relations"]
    assert relations
    for pair in relations:
        (app_a, ep_a), (app_b, ep_b) = (side.split(":", 1) for side in pair)
        kind_a, spec_a = _endpoint(charms[app_a], ep_a)
        kind_b, spec_b = _endpoint(charms[app_b], ep_b)
        assert {kind_a, kind_b} == {"provides", "requires"}, pair
        assert spec_a["interface"] == spec_b["interface"], pair
        if charms[app_a].metadata().get("subordinate") or charms[app_b].metadata().get(
            "subordinate"
        ):
            assert "container" in (spec_a.get("scope"), spec_b.get("scope")), pair


def _requirement_names(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
            assert match, line
            names.append(match.group(0))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@pytest.mark.parametrize("app", APPS)
def test_venv_holds_every_requirement(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    requirements = (_source_dir(charm) / "requirements.txt").read_text(encoding="utf-8")
    names = {_normalise(n) for n in _requirement_names(requirements)} | {"ops"}
    tops = charm.venv_tops()
    dist_infos = {
        _normalise(top.removesuffix(".dist-info").rsplit("-", 1)[0]): top
        for top in tops
        if top.endswith(".dist-info")
    }
    for name in sorted(names):
        assert name in dist_infos, f"{charm.path.name}: venv has no {name} distribution"
        # Every top-level module or package the distribution installed is in venv/.
        record = charm.text(f"venv/{dist_infos[name]}/RECORD")
        installed = {
            row.split(",", 1)[0].split("/", 1)[0]
            for row in record.splitlines()
            if row and not row.startswith(("../", "/"))
        }
        installed = {n for n in installed if not n.endswith(".dist-info") and n != "__pycache__"}
        assert installed, name
        assert installed <= tops, f"{name}: {sorted(installed - tops)} missing from venv/"
    for module in ("ops", "yaml", "jinja2", "cryptography"):
        assert module in tops


@pytest.mark.parametrize("app", APPS)
def test_binary_modules_match_the_base_python(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    channel = charm.yaml("manifest.yaml")["bases"][0]["channel"]
    major, minor = BASE_PYTHON[channel]
    tags = {
        m.group(1)
        for n in charm.names
        if n.startswith("venv/") and (m := re.search(r"\.cpython-(\d+)-", n))
    }
    assert tags == {f"{major}{minor}"}, f"extension modules built for {tags}"


def _base_python() -> Path | None:
    spec = importlib.util.spec_from_file_location("kaji_pack", ROOT / "tools" / "pack.py")
    assert spec
    assert spec.loader
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    try:
        return pack.find_target_python(None)
    except SystemExit:
        return None


@pytest.mark.parametrize("app", APPS)
def test_packed_charm_imports_under_the_base_python(
    charms: dict[str, PackedCharm], app: str, tmp_path: Path
) -> None:
    python = _base_python()
    if python is None:
        pytest.skip("no Python 3.12 (the ubuntu@24.04 charm Python) on this machine")
    charms[app].zip.extractall(tmp_path)
    code = (
        "import sys; sys.path[:0] = ['lib', 'venv'];"
        "import ops, yaml, jinja2, kaji, kaji.pki;"
        "from cryptography.hazmat.primitives.asymmetric import ec;"
        "ec.generate_private_key(ec.SECP256R1());"
        "import yaml._yaml, markupsafe._speedups;"
        "print(ops.__file__)"
    )
    result = subprocess.run(
        [str(python), "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().is_relative_to(tmp_path.resolve())

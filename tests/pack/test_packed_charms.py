"""Checks on the charms that `tox -e pack` (tools/pack.py) leaves in build/.

Each application of bundles/k8s.yaml names its charm file; the packed charm must be a
complete machine charm: dispatch and hooks, the charm code, the shared lib/kaji (identical to
the source tree's), metadata Juju accepts whose endpoints serve the bundle's relations, and a
venv holding every requirement built for the Python of the charm's base. Every charm's code,
lib/kaji and dependencies import with the PYTHONPATH its dispatch sets and nothing else.

A plain `charmcraft pack` in a charm directory (what charm authors and pytest-operator's
`ops_test.build_charm` run, with nothing copied in first) must give the same: one charm is
packed that way here. A charm whose metadata Juju would refuse is refused (a small bad charm,
packed the same way, proves the check refuses it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from kaji.model.metadata import metadata_problems

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

    def juju_metadata(self) -> dict[str, Any]:
        """What Juju reads at deploy time: metadata.yaml with config.yaml as `config`."""
        if "metadata.yaml" not in self.names:
            return dict(self.metadata())
        meta = dict(self.yaml("metadata.yaml"))
        if "config.yaml" in self.names:
            meta["config"] = self.yaml("config.yaml")
        return meta

    def juju_refusals(self) -> list[str]:
        """Every reason Juju would refuse this charm's metadata (kaji.model.metadata)."""
        return metadata_problems(self.juju_metadata(), self.path.name)

    def mode(self, name: str) -> int:
        return self.zip.getinfo(name).external_attr >> 16

    def files(self, prefix: str) -> set[str]:
        return {n for n in self.names if n.startswith(prefix) and not n.endswith("/")}

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


#: lib/kaji's parts no charm imports (the offline model, the tests' pytest plugin): not packed.
DEVELOPMENT_ONLY = ("model/", "testing.py")


def _assert_shared_library_as_in_the_tree(charm: PackedCharm) -> None:
    """lib/kaji in the charm holds exactly the tree's lib/kaji files, byte for byte, no caches."""
    source = ROOT / "lib" / "kaji"
    expected = {
        f"lib/kaji/{rel}": p
        for p in source.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix != ".pyc"
        and not (rel := p.relative_to(source).as_posix()).startswith(DEVELOPMENT_ONLY)
    }
    packed = charm.files("lib/kaji/")
    assert "lib/kaji/__init__.py" in packed, f"{charm.path.name} has no lib/kaji"
    assert not [n for n in packed if "__pycache__" in n or n.endswith(".pyc")]
    assert set(expected) <= packed, f"missing: {sorted(set(expected) - packed)}"
    assert packed <= set(expected), f"not in lib/kaji: {sorted(packed - set(expected))}"
    stale = [
        name
        for name, path in expected.items()
        if hashlib.sha256(charm.zip.read(name)).digest()
        != hashlib.sha256(path.read_bytes()).digest()
    ]
    assert not stale, f"{charm.path.name} is older than lib/kaji ({stale}): run `tox -e pack`"


@pytest.mark.parametrize("app", APPS)
def test_shared_library_is_packed_as_in_the_tree(charms: dict[str, PackedCharm], app: str) -> None:
    _assert_shared_library_as_in_the_tree(charms[app])


GENERATED = {"dispatch", "manifest.yaml", "metadata.yaml", "config.yaml", "actions.yaml"}
"""What charmcraft writes into the charm itself (besides hooks/ and venv/)."""
UNPACKED = {"charmcraft.yaml", ".jujuignore", "tests", "parts", "stage", "prime", "overlay"}
"""What stays out of the charm: tests by .jujuignore, charmcraft's own file and work dirs."""
CACHES = {"__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
"""Caches anywhere in a charm directory, left out by its .jujuignore."""


def _assert_charm_code_as_in_the_tree(charm: PackedCharm, charm_dir: Path) -> None:
    """Every file of the charm directory but tests/ is packed byte for byte, and nothing else."""
    expected = {
        rel: path
        for path in charm_dir.rglob("*")
        if path.is_file()
        and (rel := path.relative_to(charm_dir).as_posix()).split("/", 1)[0] not in UNPACKED
        and not CACHES & set(path.parts)
        and path.suffix not in (".pyc", ".charm")
        and not rel.startswith("lib/kaji/")
    }
    packed = {
        name
        for name in charm.files("")
        if name.split("/", 1)[0] not in {"venv", "hooks", *GENERATED}
        and not name.startswith("lib/kaji/")
    }
    assert packed == set(expected), (
        f"{charm.path.name}: missing {sorted(set(expected) - packed)}, "
        f"extra {sorted(packed - set(expected))}"
    )
    stale = [n for n, p in expected.items() if charm.zip.read(n) != p.read_bytes()]
    assert not stale, f"{charm.path.name} is older than {charm_dir} ({stale}): run `tox -e pack`"


@pytest.mark.parametrize("app", APPS)
def test_charm_code_is_packed_as_in_the_tree(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    _assert_charm_code_as_in_the_tree(charm, _source_dir(charm))


@pytest.mark.parametrize("app", APPS)
def test_charm_holds_no_tests_or_build_leftovers(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    tops = {n.split("/", 1)[0] for n in charm.names}
    leftovers = tops & {"tests", "parts", "stage", "prime", "overlay", "staging-venv", "build"}
    assert not leftovers, f"{charm.path.name} holds {sorted(leftovers)}"
    assert "charmcraft-dependencies-hash.txt" not in tops
    assert not [n for n in charm.names if n.endswith(".charm")]


@pytest.mark.parametrize("app", APPS)
def test_juju_accepts_the_packed_metadata(charms: dict[str, PackedCharm], app: str) -> None:
    charm = charms[app]
    assert "metadata.yaml" in charm.names
    assert charm.juju_refusals() == []


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


@functools.cache
def _pack_tool() -> ModuleType:
    """tools/pack.py as a module (registered, as dataclasses and typing expect)."""
    spec = importlib.util.spec_from_file_location("kaji_pack_tool", ROOT / "tools" / "pack.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _base_python() -> Path | None:
    try:
        return _pack_tool().find_target_python(None)
    except SystemExit:
        return None


PROBE = """\
import importlib, json, os, pkgutil, sys
src = os.path.dirname(os.path.abspath(__file__))
import kaji
names = ["kaji", *(i.name for i in pkgutil.walk_packages(kaji.__path__, "kaji."))]
names += [i.name for i in pkgutil.walk_packages([src]) if i.name != "kaji_pack_probe"]
names += ["ops", "yaml", "yaml._yaml", "jinja2", "markupsafe._speedups", "cryptography"]
files = {}
for name in names:
    if name.rsplit(".", 1)[-1] != "__main__":
        files[name] = getattr(importlib.import_module(name), "__file__", None)
from cryptography.hazmat.primitives.asymmetric import ec
ec.generate_private_key(ec.SECP256R1())
print(json.dumps({"files": files, "path": sys.path}))
"""
"""Imports every kaji module, every module of the charm's src/ and its key dependencies."""


def _dispatch_environment(charm: PackedCharm) -> tuple[str, str]:
    """(PYTHONPATH, entry point) as the charm's dispatch script sets them."""
    dispatch = charm.text("dispatch")
    pythonpath = re.search(r"PYTHONPATH=(\S+)", dispatch)
    entry = re.search(r"exec \./(\S+)", dispatch)
    assert pythonpath, dispatch
    assert entry, dispatch
    return pythonpath.group(1), entry.group(1)


def _assert_imports_as_dispatched(charm: PackedCharm, root: Path) -> dict[str, Any]:
    """Unpack the charm into root and import everything the way a hook would.

    dispatch runs `PYTHONPATH=lib:venv exec ./src/charm.py` in the charm directory: a probe
    next to the entry point runs with that PYTHONPATH, with `-S` so that nothing outside the
    charm (site-packages) can stand in for what the charm lacks.
    """
    python = _base_python()
    if python is None:
        pytest.skip("no Python 3.12 (the ubuntu@24.04 charm Python) on this machine")
    pythonpath, entry = _dispatch_environment(charm)
    charm.zip.extractall(root)
    probe = (root / entry).parent / "kaji_pack_probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": pythonpath}
    result = subprocess.run(
        [str(python), "-S", str(probe.relative_to(root))],
        cwd=root,
        env={**env, "HOME": str(root), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    files: dict[str, str | None] = found["files"]
    outside = {
        name: path
        for name, path in files.items()
        if path and not (root / path).resolve().is_relative_to(root.resolve())
    }
    assert not outside, f"imported from outside the charm: {outside}"
    for name in ("kaji", "kaji.pki", "kaji.reconciler", "ops", "charm"):
        assert name in files, f"{name} was not imported"
    kaji_file = (root / str(files["kaji"])).resolve()
    assert kaji_file == (root / "lib" / "kaji" / "__init__.py").resolve()
    return files


@pytest.mark.parametrize("app", APPS)
def test_packed_charm_imports_as_dispatch_runs_it(
    charms: dict[str, PackedCharm], app: str, tmp_path: Path
) -> None:
    charm = charms[app]
    files = _assert_imports_as_dispatched(charm, tmp_path)
    src_modules = {
        p.relative_to(tmp_path / "src").with_suffix("").as_posix().replace("/", ".")
        for p in (tmp_path / "src").rglob("*.py")
        if p.name != "kaji_pack_probe.py"
    }
    src_modules = {m.removesuffix(".__init__") for m in src_modules}
    assert src_modules <= set(files), f"not imported: {sorted(src_modules - set(files))}"


# The plain pack: `charmcraft pack` in the charm's own directory, nothing copied in first.

PLAIN_CHARM = "cni"
"""The charm packed the plain way (the smallest: a subordinate)."""


PACK_PLAIN = (sys.executable, str(ROOT / "tools" / "pack.py"), "--plain")


def _pack_plain(charm_dir: Path, build_dir: Path) -> Path:
    """`tools/pack.py --plain`: `charmcraft pack` in charm_dir (in the os-release namespace)."""
    result = subprocess.run(
        [*PACK_PLAIN, str(charm_dir), "--build-dir", str(build_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    packed = sorted(build_dir.glob("*.charm"))
    assert len(packed) == 1, packed
    return packed[0]


@pytest.fixture(scope="module")
def plain_charm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackedCharm]:
    """charms/cni packed by a plain `charmcraft pack` in charms/cni."""
    charm_dir = ROOT / "charms" / PLAIN_CHARM
    charm = PackedCharm(_pack_plain(charm_dir, tmp_path_factory.mktemp("plain")))
    yield charm
    charm.zip.close()


def test_plain_pack_leaves_the_source_tree_as_it_was(plain_charm: PackedCharm) -> None:
    charm_dir = ROOT / "charms" / PLAIN_CHARM
    left = [n for n in ("parts", "stage", "prime", "overlay", "lib") if (charm_dir / n).exists()]
    assert not left, f"{charm_dir} holds {left}"
    assert not list(charm_dir.glob("*.charm"))


def test_plain_pack_holds_the_shared_library(plain_charm: PackedCharm) -> None:
    _assert_shared_library_as_in_the_tree(plain_charm)
    _assert_charm_code_as_in_the_tree(plain_charm, ROOT / "charms" / PLAIN_CHARM)
    assert not [n for n in plain_charm.names if n.split("/", 1)[0] == "tests"]


def test_plain_pack_imports_kaji_and_its_own_modules(
    plain_charm: PackedCharm, tmp_path: Path
) -> None:
    files = _assert_imports_as_dispatched(plain_charm, tmp_path)
    for module in (
        "charm",
        "kaji_cni.allocation",
        "kaji_cni.dataplane",
        "kaji.interfaces.cni",
        "kaji.host",
    ):
        assert module in files


def test_plain_pack_metadata_is_accepted_and_matches_the_source(
    plain_charm: PackedCharm,
) -> None:
    assert plain_charm.juju_refusals() == []
    source = yaml.safe_load(
        (ROOT / "charms" / PLAIN_CHARM / "charmcraft.yaml").read_text(encoding="utf-8")
    )
    packed = plain_charm.metadata()
    for kind in ENDPOINT_KINDS:
        assert packed.get(kind, {}) == source.get(kind, {}), kind


BAD_SUBORDINATE = """\
name: kaji-bad-subordinate
type: charm
title: A subordinate Juju refuses
summary: Its only container-scoped endpoint is a provides, so Juju refuses to deploy it.
description: Packed by the packing check to prove the check refuses what Juju refuses.
base: ubuntu@24.04
platforms:
  {arch}:
parts:
  charm:
    plugin: charm
    source: .
subordinate: true
provides:
  cni:
    interface: kaji-cni
    scope: container
"""


def test_check_refuses_a_subordinate_without_container_requires(tmp_path: Path) -> None:
    charm_dir = tmp_path / "bad-subordinate"
    (charm_dir / "src").mkdir(parents=True)
    (charm_dir / "charmcraft.yaml").write_text(
        BAD_SUBORDINATE.format(arch=_pack_tool().DEB_ARCH.get(os.uname().machine, "amd64")),
        encoding="utf-8",
    )
    entry = charm_dir / "src" / "charm.py"
    entry.write_text("#!/usr/bin/env python3\n", encoding="utf-8")
    entry.chmod(0o755)
    # charmcraft packs it without a word: only the check stands between it and a deploy.
    bad = PackedCharm(_pack_plain(charm_dir, tmp_path / "build"))
    with bad.zip:
        assert bad.juju_metadata()["subordinate"] is True
        refusals = bad.juju_refusals()
    assert refusals
    assert any('lacks "requires" relation with container scope' in r for r in refusals), refusals

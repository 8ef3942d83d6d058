"""kaji.lazy: modules and package exports loaded on first use, and the no-op hook stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import kaji.host
from kaji.lazy import lazy_exports, lazy_import

LIB = Path(__file__).resolve().parents[2] / "lib"


def test_lazy_import_runs_the_module_on_first_attribute_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kaji_lazy_probe.py").write_text("import sys\nsys.kaji_lazy_ran = True\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kaji_lazy_probe", raising=False)
    monkeypatch.setattr(sys, "kaji_lazy_ran", False, raising=False)
    module = lazy_import("kaji_lazy_probe")
    assert sys.kaji_lazy_ran is False  # type: ignore[attr-defined]
    assert lazy_import("kaji_lazy_probe") is module is sys.modules["kaji_lazy_probe"]
    assert module.X == 1
    assert sys.kaji_lazy_ran is True  # type: ignore[attr-defined]
    with pytest.raises(ModuleNotFoundError):
        lazy_import("kaji_no_such_module_here")


def test_lazy_exports_import_the_submodule_when_a_name_is_first_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "kaji_lazy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "heavy.py").write_text("import sys\nsys.kaji_heavy_ran = True\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "kaji_heavy_ran", False, raising=False)
    import kaji_lazy_pkg

    monkeypatch.setitem(sys.modules, "kaji_lazy_pkg", kaji_lazy_pkg)
    getattr_ = lazy_exports("kaji_lazy_pkg", {"VALUE": "heavy"}, ["heavy"])
    monkeypatch.setattr(kaji_lazy_pkg, "__getattr__", getattr_, raising=False)
    assert sys.kaji_heavy_ran is False  # type: ignore[attr-defined]
    assert getattr_("VALUE") == 42
    assert sys.kaji_heavy_ran is True  # type: ignore[attr-defined]
    assert kaji_lazy_pkg.VALUE == 42  # cached on the package
    assert isinstance(getattr_("heavy"), types.ModuleType)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        getattr_("missing")


def test_every_name_kaji_host_exports_resolves_to_its_submodule_definition() -> None:
    for name in kaji.host.__all__:
        value = getattr(kaji.host, name)
        assert value.__module__.startswith("kaji.host."), name
    assert sorted(kaji.host.__all__) == sorted(kaji.host._EXPORTS)
    assert set(kaji.host.__all__) <= set(dir(kaji.host))
    with pytest.raises(AttributeError):
        _ = kaji.host.no_such_name  # type: ignore[attr-defined]


def _loaded_after(code: str) -> set[str]:
    """The kaji and heavy modules a fresh interpreter has run after running ``code``.

    A module ``lazy_import`` gave but nothing used yet is in sys.modules, not run: left out.
    """
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps(sorted(n for n, m in sys.modules.items() if n.startswith("
        "('kaji', 'tarfile', 'cryptography', 'jinja2', 'yaml'))"
        " and type(m).__name__ != '_LazyModule')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(LIB)},
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout))


def test_importing_kaji_host_imports_none_of_its_submodules() -> None:
    assert _loaded_after("import kaji.host") == {"kaji", "kaji.host", "kaji.lazy"}


def test_a_sandboxed_host_loads_neither_the_installer_nor_the_process_manager() -> None:
    loaded = _loaded_after(
        "import os; os.environ['KAJI_HOST_ROOT'] = '/nonexistent'\n"
        "from kaji.host import host_from_environment\nhost_from_environment()"
    )
    assert "kaji.host.root" in loaded
    assert not loaded & {"kaji.host.binaries", "kaji.host.processes", "tarfile"}
    assert not any(m.startswith(("cryptography", "jinja2", "yaml")) for m in loaded)

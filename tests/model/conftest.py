"""Shared helpers for the offline-model tests."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import scenario.logger  # noqa: F401  (sets its level on import; quietened below)

from kaji.model.engine import Model

ROOT = Path(__file__).resolve().parents[2]
TEST_BUNDLES = Path(__file__).resolve().parent / "bundles"
TEST_CHARMS = Path(__file__).resolve().parent / "charms"

logging.getLogger("ops-scenario").setLevel(logging.ERROR)


def source_bundle(tmp_path: Path, bundle: Path) -> Path:
    """A copy of ``bundle`` where the packed charms it names are absent: run from source."""
    bundles = tmp_path / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    copy = bundles / bundle.name
    shutil.copy(bundle, copy)
    return copy


@pytest.fixture(autouse=True)
def _destroy_test_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Destroy every model a test created: its processes stop, its loopback range is freed."""
    created: list[Model] = []
    original = Model.create.__func__  # type: ignore[attr-defined]

    def create(cls: type[Model], *args: object, **kwargs: object) -> Model:
        model = original(cls, *args, **kwargs)
        created.append(model)
        return model

    monkeypatch.setattr(Model, "create", classmethod(create))
    yield
    for model in created:
        if (model.directory / "model.json").exists():
            Model.load(model.directory).destroy()


@pytest.fixture
def model_dir(tmp_path: Path) -> Iterator[Path]:
    """A model directory whose processes are stopped when the test ends."""
    directory = tmp_path / "model"
    yield directory
    if (directory / "model.json").exists():
        Model.load(directory).destroy()


def machine_file(model: Model, unit: str, path: str) -> str:
    """The text of a rendered file on the machine of ``unit``."""
    return (model.unit_root(unit) / path.lstrip("/")).read_text()


def rendered_files(model: Model) -> dict[str, dict[str, bytes]]:
    """Every file of every machine, per principal unit, without service-manager bookkeeping."""
    files: dict[str, dict[str, bytes]] = {}
    for unit in model.world.units.values():
        if unit.principal is not None:
            continue
        root = model.unit_root(unit.name)
        files[unit.name] = {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }
    return files

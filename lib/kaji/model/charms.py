"""Loading a charm's real code for the offline model: one isolated module set per charm.

Every charm's entry point is ``src/charm.py`` and its workload modules sit beside it, so two
charms may well both have a top-level ``charm`` or ``workload`` module. Each charm is therefore
loaded under a unique module name, with its ``src/`` on ``sys.path`` only while its code runs,
and the modules it imported from ``src/`` are kept aside (not in ``sys.modules``) between runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import yaml

from kaji.lazy import lazy_import

if TYPE_CHECKING:
    import ops
else:
    ops = lazy_import("ops")

#: Files scenario writes into a charm root for every run; never linked from the source.
_METADATA_FILES = ("metadata.yaml", "config.yaml", "actions.yaml")


class CharmLoadError(Exception):
    """The charm's code or metadata cannot be loaded."""


def read_charm_metadata(root: Path) -> dict[str, Any]:
    """The charm's metadata as one charmcraft.yaml-like dict (with ``config`` and ``actions``)."""
    charmcraft = root / "charmcraft.yaml"
    meta: dict[str, Any] = {}
    if charmcraft.exists():
        meta.update(yaml.safe_load(charmcraft.read_text()) or {})
    if (root / "metadata.yaml").exists() and not meta.get("name"):
        meta.update(yaml.safe_load((root / "metadata.yaml").read_text()) or {})
    if "config" not in meta and (root / "config.yaml").exists():
        meta["config"] = yaml.safe_load((root / "config.yaml").read_text()) or {}
    if "actions" not in meta and (root / "actions.yaml").exists():
        meta["actions"] = yaml.safe_load((root / "actions.yaml").read_text()) or {}
    if not meta.get("name"):
        raise CharmLoadError(f"{root}: no charmcraft.yaml or metadata.yaml naming the charm")
    return meta


def unpack_charm(archive: Path, destination: Path) -> Path:
    """Extract a packed .charm into ``destination`` (once per archive mtime); return the root."""
    stamp = destination / ".kaji-unpacked-from"
    marker = f"{archive.resolve()} {archive.stat().st_mtime_ns}"
    if stamp.exists() and stamp.read_text() == marker:
        return destination
    destination.mkdir(parents=True, exist_ok=True)
    meta_dir = destination / ".kaji-metadata"
    meta_dir.mkdir(exist_ok=True)
    with zipfile.ZipFile(archive) as packed:
        for member in packed.namelist():
            if member.startswith("venv/") or ".." in Path(member).parts:
                continue  # the model brings its own ops and kaji
            if member in (*_METADATA_FILES, "charmcraft.yaml"):
                # Kept aside: scenario writes its own metadata files into the charm root.
                (meta_dir / member).write_bytes(packed.read(member))
                continue
            packed.extract(member, destination)
    stamp.write_text(marker)
    return destination


def newest_mtime(directory: Path) -> float:
    """The newest modification time of any file under ``directory`` (caches excluded)."""
    newest = 0.0
    for path in directory.rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        newest = max(newest, path.stat().st_mtime)
    return newest


def _virtual_root(source: Path, destination: Path) -> Path:
    """A charm root of symlinks to the source's entries, so scenario may write metadata there."""
    destination.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name in _METADATA_FILES or entry.name.startswith("."):
            continue
        link = destination / entry.name
        if link.is_symlink() and os.readlink(link) == str(entry):
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(entry)
    return destination


class CharmCode:
    """One charm's code and metadata, loaded in isolation from every other charm's."""

    def __init__(self, source: Path, work_dir: Path) -> None:
        """Load the charm at ``source`` (a source directory or a packed .charm).

        Args:
            source: the charm source directory, or a packed ``.charm`` archive.
            work_dir: a directory of the model's own, where the charm root the charm runs in
                is made (symlinks to the source, or the unpacked archive).
        """
        self.source = source
        if source.is_dir():
            self.root = _virtual_root(source, work_dir)
            real_root = source
        else:
            self.root = unpack_charm(source, work_dir)
            real_root = self.root
            self.meta = read_charm_metadata(self.root / ".kaji-metadata")
        if source.is_dir():
            self.meta = read_charm_metadata(real_root)
        self.name = str(self.meta["name"])
        self.src = (real_root / "src").resolve()
        self._private: dict[str, ModuleType] = {}
        unique = re.sub(r"\W", "_", f"kaji_model_charm_{self.name}_{abs(hash(str(source)))}")
        path = self.src / "charm.py"
        if not path.exists():
            raise CharmLoadError(f"{source}: no src/charm.py")
        with self.imports():
            spec = importlib.util.spec_from_file_location(unique, path)
            if spec is None or spec.loader is None:
                raise CharmLoadError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[unique]
                raise CharmLoadError(f"{path}: {type(e).__name__}: {e}") from e
            # Inside: the module's lazy imports (kaji.lazy) may load while it is searched.
            self.charm_type = self._find_charm_class(module)
        self.module = module

    @staticmethod
    def _find_charm_class(module: ModuleType) -> type[Any]:
        classes = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, ops.CharmBase)
            and obj.__module__ == module.__name__
        ]
        # The charm class is the one no other charm class of the module derives from.
        leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
        if len(leaves) != 1:
            names = ", ".join(c.__name__ for c in leaves) or "none"
            raise CharmLoadError(f"{module.__file__}: expected one charm class, found {names}")
        return leaves[0]

    @property
    def config(self) -> dict[str, Any]:
        """The ``config`` section (with ``options``)."""
        return dict(self.meta.get("config") or {"options": {}})

    @property
    def actions(self) -> dict[str, Any]:
        """The ``actions`` section."""
        return dict(self.meta.get("actions") or {})

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata without config and actions (what metadata.yaml would hold)."""
        return {k: v for k, v in self.meta.items() if k not in ("config", "actions")}

    def endpoint(self, name: str) -> Mapping[str, Any]:
        """The declaration of relation endpoint ``name``."""
        for role in ("provides", "requires", "peers"):
            spec = (self.meta.get(role) or {}).get(name)
            if spec is not None or name in (self.meta.get(role) or {}):
                return {"role": role, **(spec or {})}
        raise KeyError(name)

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """Make this charm's ``src/`` modules importable (and only this charm's) for a while."""
        saved: dict[str, ModuleType | None] = {}
        for name, module in self._private.items():
            saved[name] = sys.modules.get(name)
            sys.modules[name] = module
        src = str(self.src)
        sys.path.insert(0, src)
        before = set(sys.modules)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(src)
            for name in list(sys.modules):
                if name in before and name not in self._private:
                    continue
                module = sys.modules[name]
                file = _own_file(module)
                if file and os.path.realpath(file).startswith(src + os.sep):
                    self._private[name] = sys.modules.pop(name)
            for name, previous in saved.items():
                if previous is not None:
                    sys.modules[name] = previous


def _own_file(module: object) -> str | None:
    """A module's ``__file__`` without running it if it is a lazy one (kaji.lazy)."""
    try:
        namespace = object.__getattribute__(module, "__dict__")
    except AttributeError:
        return getattr(module, "__file__", None)
    file = namespace.get("__file__")
    return file if isinstance(file, str) else None

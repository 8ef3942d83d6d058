"""Deferred imports: the one way kaji code puts off what a no-op hook never uses.

A module that needs something heavy (cryptography, jinja2, yaml, a charm's workload package)
only on some paths binds it at module level with :func:`lazy_import`, next to an
``if TYPE_CHECKING:`` import of the same module for the type checker::

    from typing import TYPE_CHECKING

    from kaji.lazy import lazy_import

    if TYPE_CHECKING:
        from kaji import pki
    else:
        pki = lazy_import("kaji.pki")

The module's code runs when one of its attributes is first read. A package that re-exports
names from its submodules (``kaji.host``) resolves them on first use with
:func:`lazy_exports`, so importing the package imports none of its submodules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any


def lazy_import(name: str) -> ModuleType:
    """Import module ``name`` on first attribute access (for what a no-op hook never uses).

    The module goes into ``sys.modules`` (and onto its package) at once, so later imports get
    the same object; its code runs when something first reads an attribute of it. Use as
    ``workload = lazy_import("my_workload")`` next to an ``if TYPE_CHECKING:`` import.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def lazy_exports(
    package: str, exports: Mapping[str, str], submodules: Iterable[str] = ()
) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) giving a package's re-exported names on first use.

    Args:
        package: the package's ``__name__``.
        exports: each exported name and the submodule (relative to ``package``) defining it.
        submodules: submodule names that ``package.<name>`` gives, imported on first use.

    The submodule is imported the first time the name is read (``from package import name``
    included) and the value cached on the package, so later reads cost nothing.
    """
    known = frozenset(submodules)

    def __getattr__(name: str) -> Any:  # noqa: N807 - the PEP 562 hook's name
        if name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        elif name in known:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__

"""Import a charm's workload code from its source tree, under a name no other charm uses.

Workload tests run with only ``lib`` on the path (every charm has its own ``src/charm.py``), so
each test loads the module it drives from ``charms/<charm>/src`` by file, registered under an
alias that cannot clash with another charm's module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CHARMS = Path(__file__).resolve().parents[2] / "charms"


def load_charm_module(charm: str, module: str, alias: str | None = None) -> ModuleType:
    """Import ``charms/<charm>/src/<module>`` (a file or a package; ``pkg.sub`` allowed)."""
    top, _, rest = module.partition(".")
    alias = alias or top
    if alias not in sys.modules:
        src = CHARMS / charm / "src"
        package = src / top
        if package.is_dir():
            spec = importlib.util.spec_from_file_location(
                alias, package / "__init__.py", submodule_search_locations=[str(package)]
            )
        else:
            spec = importlib.util.spec_from_file_location(alias, src / f"{top}.py")
        assert spec is not None
        assert spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[alias] = loaded
        spec.loader.exec_module(loaded)
    return importlib.import_module(f"{alias}.{rest}") if rest else sys.modules[alias]

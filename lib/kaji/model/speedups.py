"""The ops.testing speed-ups the engine runs every hook with, kept in one place.

Each hook runs the charm through ops.testing in this process; these context managers make
that cheap and observable without changing what the charm sees: the hook's environment set
and restored, the kaji Hosts built collected (for their ``stats``), the charm metadata YAML
scenario dumps and ops parses back on every hook cached.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import yaml

from kaji.host.root import Host
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    import ops.charm
    from scenario import _runtime
else:
    ops = lazy_import("ops")
    _runtime = lazy_import("scenario._runtime")


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ while the block runs (the hook's environment)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def collect_hosts(into: list[Any]) -> Iterator[None]:
    """Collect every kaji Host built while the block runs (to read its ``stats``)."""
    original = Host.__init__

    def init(self: Host, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        into.append(self)

    Host.__init__ = init  # type: ignore[method-assign,unused-ignore]
    try:
        yield
    finally:
        Host.__init__ = original  # type: ignore[method-assign,unused-ignore]


class CachedYaml:
    """Stands in for the ``yaml`` module in scenario and ops while the model runs hooks.

    Every hook, scenario dumps the charm's metadata into the charm root and ops parses it
    back; the content is the same each time, so both are cached (and done with libyaml when
    present). Everything else is the real module.
    """

    def __init__(self) -> None:
        self._yaml = yaml
        self._dumped: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        self._dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        self._loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._yaml, name)

    def safe_dump(self, data: Any, stream: Any = None, **kwargs: Any) -> Any:
        """yaml.safe_dump, cached for a dump to a string."""
        if stream is not None or kwargs:
            return self._yaml.safe_dump(data, stream, **kwargs)
        key = json.dumps(data, sort_keys=True, default=repr)
        if key not in self._dumped:
            self._dumped[key] = self._yaml.dump(data, Dumper=self._dumper)
        return self._dumped[key]

    def safe_load(self, stream: Any) -> Any:
        """yaml.safe_load, cached for a string."""
        if not isinstance(stream, str):
            return self._yaml.safe_load(stream)
        if stream not in self._loaded:
            self._loaded[stream] = self._yaml.load(stream, Loader=self._loader)
        return copy.deepcopy(self._loaded[stream])


_CACHED_YAML: CachedYaml | None = None


@contextlib.contextmanager
def fast_metadata_yaml() -> Iterator[None]:
    """While the block runs, scenario and ops use the cached YAML (``CachedYaml``)."""
    global _CACHED_YAML
    if _CACHED_YAML is None:
        _CACHED_YAML = CachedYaml()
    saved = _runtime.yaml, ops.charm.yaml
    _runtime.yaml = _CACHED_YAML  # type: ignore[assignment]
    ops.charm.yaml = _CACHED_YAML  # type: ignore[assignment]
    try:
        yield
    finally:
        _runtime.yaml, ops.charm.yaml = saved

"""Hook-tool accounting: the Juju hook commands a real controller would see, per hook.

Under Juju every ``relation-get``, ``config-get``, ``is-leader``, ``status-set``, ... that ops
runs is a separate process talking to the controller. In the model ops runs against
scenario's ``_MockModelBackend``, a subclass of ops' ``_ModelBackend`` that answers from the
State instead of running the tools. ops' higher layers (``Model``, ``Relation``,
``RelationDataContent``, ``ConfigData``, secrets) call the backend exactly as they would under
Juju, so counting the backend's methods counts the tools, with two corrections for what ops'
real backend (ops/model.py ``_ModelBackend``) does on its own:

- ``is_leader``: the real backend caches leadership for Juju's 30 s lease, so one hook runs
  ``is-leader`` once;
- ``relation_remote_app_name``: answered from ``JUJU_REMOTE_APP`` for the event's own
  relation, otherwise ``relation-list --app``.

Calls the backend makes to itself are counted once (only the outermost call).
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from scenario import mocking
else:
    mocking = lazy_import("scenario.mocking")

#: ops backend method -> the Juju hook tool it runs.
TOOLS: dict[str, str] = {
    "relation_ids": "relation-ids",
    "relation_list": "relation-list",
    "relation_remote_app_name": "relation-list",
    "relation_get": "relation-get",
    "relation_set": "relation-set",
    "relation_model_get": "relation-model-get",
    "config_get": "config-get",
    "is_leader": "is-leader",
    "resource_get": "resource-get",
    "status_get": "status-get",
    "status_set": "status-set",
    "storage_list": "storage-list",
    "storage_get": "storage-get",
    "storage_add": "storage-add",
    "action_get": "action-get",
    "action_set": "action-set",
    "action_log": "action-log",
    "action_fail": "action-fail",
    "application_version_set": "application-version-set",
    "juju_log": "juju-log",
    "network_get": "network-get",
    "add_metrics": "add-metric",
    "planned_units": "goal-state",
    "secret_get": "secret-get",
    "secret_info_get": "secret-info-get",
    "secret_set": "secret-set",
    "secret_add": "secret-add",
    "secret_grant": "secret-grant",
    "secret_revoke": "secret-revoke",
    "secret_remove": "secret-remove",
    "secret_ids": "secret-ids",
    "open_port": "open-port",
    "close_port": "close-port",
    "opened_ports": "opened-ports",
    "reboot": "juju-reboot",
    "credential_get": "credential-get",
}


def _tool_for(backend: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The tool a real backend would run for this call ('' when it runs none)."""
    if method == "is_leader":
        if getattr(backend, "_kaji_leader_checked", False):
            return ""
        backend._kaji_leader_checked = True
    elif method == "relation_remote_app_name":
        context = getattr(backend, "_juju_context", None)
        relation_id = args[0] if args else kwargs.get("relation_id")
        if (
            context is not None
            and context.relation_id is not None
            and context.remote_app_name is not None
            and context.relation_id == relation_id
        ):
            return ""
    return TOOLS[method]


def _wrap(method: str, original: Callable[..., Any], into: collections.Counter[str]) -> Any:
    @functools.wraps(original)
    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(self, "_kaji_tool_depth", 0)
        if depth == 0:
            tool = _tool_for(self, method, args, kwargs)
            if tool:
                into[tool] += 1
        self._kaji_tool_depth = depth + 1
        try:
            return original(self, *args, **kwargs)
        finally:
            self._kaji_tool_depth = depth

    return counted


@contextlib.contextmanager
def count_hook_tools(into: collections.Counter[str]) -> Iterator[None]:
    """Count, into ``into`` (tool name -> calls), every hook tool ops runs in the block."""
    backend = mocking._MockModelBackend
    saved: dict[str, Any] = {}
    for method in TOOLS:
        original = getattr(backend, method, None)
        if original is None:
            continue
        saved[method] = backend.__dict__.get(method)
        setattr(backend, method, _wrap(method, original, into))
    try:
        yield
    finally:
        for method, own in saved.items():
            if own is None:
                delattr(backend, method)
            else:
                setattr(backend, method, own)


def summarise(counters: dict[str, int]) -> dict[str, Any]:
    """Per-hook hook-tool figures from a unit's counters (see ``Model`` accounting)."""
    hooks = counters.get("hooks", 0)
    calls = counters.get("hook_tools", 0)
    by_tool = {
        k.removeprefix("tool:"): v for k, v in sorted(counters.items()) if k.startswith("tool:")
    }
    return {
        "hooks": hooks,
        "calls": calls,
        "mean_per_hook": round(calls / hooks, 2) if hooks else 0.0,
        "max_per_hook": counters.get("hook_tools_max", 0),
        "by_tool": by_tool,
    }


def merge(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One application's figures from its units' summaries."""
    hooks = sum(s["hooks"] for s in summaries)
    calls = sum(s["calls"] for s in summaries)
    by_tool: collections.Counter[str] = collections.Counter()
    for s in summaries:
        by_tool.update(s["by_tool"])
    return {
        "hooks": hooks,
        "calls": calls,
        "mean_per_hook": round(calls / hooks, 2) if hooks else 0.0,
        "max_per_hook": max((s["max_per_hook"] for s in summaries), default=0),
        "by_tool": dict(sorted(by_tool.items())),
    }

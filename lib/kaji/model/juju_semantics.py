"""Where ops.testing (scenario) is kinder than Juju, corrected while a hook or action runs.

Also the hook tools ops has no call for, which the model puts on PATH (``unit-get``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaji.lazy import lazy_import

if TYPE_CHECKING:
    import ops
    from scenario import _runtime, mocking
else:
    ops = lazy_import("ops")
    _runtime = lazy_import("scenario._runtime")
    mocking = lazy_import("scenario.mocking")

#: The ``unit-get`` hook tool as the model answers it (Juju: worker/uniter/runner/jujuc
#: unit-get.go: ``unit-get private-address|public-address [--format yaml|json]``).
UNIT_GET = """#!/bin/sh
# unit-get as the offline model answers it: the machine's addresses from the hook's env.
key="" format=smart previous=""
for arg in "$@"; do
  case "$previous" in --format) format=$arg; previous=""; continue ;; esac
  case "$arg" in
    --format=*) format=${arg#--format=} ;;
    --format) previous=--format ;;
    -*) echo "ERROR flag provided but not defined: $arg" >&2; exit 2 ;;
    *) [ -z "$key" ] || { echo "ERROR unrecognized args: [\"$arg\"]" >&2; exit 2; }; key=$arg ;;
  esac
done
case "$key" in
  public-address) value=$KAJI_MODEL_PUBLIC_ADDRESS ;;
  private-address) value=$KAJI_MODEL_PRIVATE_ADDRESS ;;
  "") echo "ERROR no setting specified" >&2; exit 2 ;;
  *) echo "ERROR unknown setting \"$key\"" >&2; exit 2 ;;
esac
if [ "$format" = json ]; then printf '"%s"\n' "$value"; else printf '%s\n' "$value"; fi
"""


@contextlib.contextmanager
def juju_semantics(
    *,
    no_remote_unit: bool = False,
    departing: str | None = None,
    removed: list[tuple[str, int]] | None = None,
    unjoined: Iterable[int] = (),
) -> Iterator[None]:
    """Where scenario is kinder than Juju, or records less, while one hook or action runs.

    - relation-changed for a change of the remote application's data has no remote unit
      (JUJU_REMOTE_UNIT empty, ``event.unit`` None); scenario insists on one;
    - relation-departed names the unit being removed in JUJU_DEPARTING_UNIT, also unit 0 and
      also on the leaving unit itself (then it is a unit of the local application); scenario
      tests the id for truthiness (unit 0 becomes the remote unit) and always prefixes the
      remote application's name;
    - resource-get of a resource nothing was attached to fails (ops raises ModelError), as
      the hook tool does; scenario raises RuntimeError;
    - a removed secret revision is recorded with its secret's id (scenario keeps the number),
      and an owner may remove any revision but the latest (scenario also refuses the one it
      "tracks", which an owner does not);
    - relation-list of a container relation whose remote unit has not joined is empty.
    """
    runtime = _runtime.Runtime
    backend: Any = mocking._MockModelBackend
    saved = runtime._get_event_env, backend.resource_get, backend.secret_remove
    original_env, original_get, original_remove = saved
    original_list = backend.relation_list
    hidden = frozenset(unjoined)

    def relation_list(self: Any, relation_id: int, **kwargs: Any) -> tuple[str, ...]:
        if relation_id in hidden:
            return ()
        return tuple(original_list(self, relation_id, **kwargs))

    def get_event_env(self: Any, state: Any, event: Any, charm_root: Path) -> dict[str, str]:
        env = original_env(self, state, event, charm_root)
        if no_remote_unit:  # Juju sets it empty for an application's change
            env["JUJU_REMOTE_UNIT"] = ""
        if departing is not None:
            env["JUJU_DEPARTING_UNIT"] = departing
        return env

    def resource_get(self: Any, resource_name: str) -> str:
        if not any(r.name == resource_name for r in self._state.resources):
            raise ops.ModelError(
                f"ERROR could not download resource: resource {resource_name!r} has no file"
            )
        return str(original_get(self, resource_name))

    def secret_remove(self: Any, id: str, *, revision: int | None = None) -> None:
        secret = self._get_secret(id)
        if secret.owner is not None and revision == secret._tracked_revision:
            # An owner tracks nothing: Juju lets it remove any revision but the latest.
            object.__setattr__(secret, "_tracked_revision", secret._latest_revision)
        original_remove(self, id, revision=revision)
        secret_id = secret.id
        if removed is not None and revision is not None:
            removed.append((secret_id, revision))

    runtime._get_event_env = get_event_env  # type: ignore[method-assign]
    backend.resource_get = resource_get
    backend.secret_remove = secret_remove
    backend.relation_list = relation_list
    try:
        yield
    finally:
        runtime._get_event_env = original_env  # type: ignore[method-assign]
        backend.resource_get, backend.secret_remove = original_get, original_remove
        backend.relation_list = original_list

"""Values converted as Juju converts them: config options, action params, statuses, times."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from kaji.lazy import lazy_import
from kaji.model.bundle import CONFIG_TYPES
from kaji.model.errors import ModelError

if TYPE_CHECKING:
    import jsonschema
    from ops import testing
else:
    testing = lazy_import("ops.testing")
    try:
        jsonschema = lazy_import("jsonschema")
    except ImportError:  # pragma: no cover - jsonschema comes with the test tools
        jsonschema = None


def next_rotate(policy: str, after: float) -> float:
    """When a secret rotating by ``policy`` is next due (Juju's RotatePolicy.NextRotateTime)."""
    if policy == "hourly":
        return after + 3600
    days = {"daily": 1, "weekly": 7}.get(policy)
    if days is not None:
        return after + days * 86400
    months = {"monthly": 1, "quarterly": 3, "yearly": 12}[policy]
    moment = datetime.fromtimestamp(after, timezone.utc)
    index = moment.month - 1 + months
    first = moment.replace(year=moment.year + index // 12, month=index % 12 + 1, day=1)
    # Go's AddDate normalises an overflowing day (Jan 31 + 1 month is Mar 3 or 2): so here.
    return (first + timedelta(days=moment.day - 1)).timestamp()


def rotate_policy(value: Any) -> str | None:
    """The rotation policy of an ops.testing Secret, None for never."""
    if value is None:
        return None
    policy = str(getattr(value, "value", value))
    return None if policy in ("", "never") else policy


def action_params(name: str, spec: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The params of action ``name`` as Juju validates them, with the schema's defaults.

    Juju turns an action's ``params`` into the ``properties`` of a JSON Schema object with
    ``additionalProperties: false`` (unless the action sets it) plus the action's other keys
    (``required``, ...), validates against it, and inserts the defaults
    (internal/charm/actions.go: ReadActionsYaml, ValidateParams, InsertDefaults).

    Raises:
        ModelError: the params do not validate.
    """
    schema: dict[str, Any] = {
        "type": "object",
        "title": name,
        "properties": dict(spec.get("params") or {}),
        "additionalProperties": False,
    }
    schema.update(
        {k: v for k, v in spec.items() if k not in ("params", "description", "parallel")}
    )
    schema.pop("execution-group", None)
    values = dict(given)
    if jsonschema is not None:
        validator = jsonschema.Draft4Validator(schema)
        errors = sorted(validator.iter_errors(values), key=lambda e: list(e.path))
        if errors:
            described = [f"({'.'.join(['root', *map(str, e.path)])}): {e.message}" for e in errors]
            raise ModelError("validation failed: " + "; ".join(described))
    else:
        unknown = sorted(set(values) - set(schema["properties"]))
        if unknown and not schema.get("additionalProperties"):
            raise ModelError(f"validation failed: unknown params {', '.join(unknown)}")
    for key, prop in schema["properties"].items():
        if key not in values and isinstance(prop, Mapping) and "default" in prop:
            values[key] = copy.deepcopy(prop["default"])
    return values


def unit_number(unit: str | None) -> int | None:
    """The number of a unit name (``app/3``: 3), None for None."""
    return None if unit is None else int(unit.rsplit("/", 1)[1])


def ops_status(status: tuple[str, str]) -> Any:
    """The ops.testing status of a recorded (name, message)."""
    name, message = status
    classes = {
        "active": testing.ActiveStatus,
        "blocked": testing.BlockedStatus,
        "waiting": testing.WaitingStatus,
        "maintenance": testing.MaintenanceStatus,
        "error": testing.ErrorStatus,
    }
    if name in classes:
        return classes[name](message)
    return testing.UnknownStatus()


def convert_option(value: Any, kind: str) -> Any:
    """A config value of the declared type (command-line strings are converted)."""
    if isinstance(value, str) and kind != "string" and kind != "secret":
        text = value.strip()
        if kind == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{value!r} is not an int") from None
        if kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a float") from None
        if kind == "boolean":
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
    expected = CONFIG_TYPES.get(kind, (str,))
    if isinstance(value, bool) and bool not in expected:
        raise ValueError(f"must be {kind}, got {json.dumps(value)}")
    if not isinstance(value, expected):
        raise ValueError(f"must be {kind}, got {json.dumps(value)}")
    return value

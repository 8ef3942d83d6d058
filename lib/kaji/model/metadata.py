"""Charm metadata checked as Juju 3.6 checks it at deploy time, every problem at once.

``metadata_problems(meta, charm)`` takes the charm's metadata as one charmcraft.yaml-like
mapping (``metadata.yaml`` content, with ``config`` holding ``config.yaml`` when there is one)
and returns every reason Juju would refuse the charm. Each rule names the Juju source it
follows (docs/offline-model.md lists them):

- juju/juju ``internal/charm/meta.go``: ``charmSchema``/``ifaceSchema`` (types and values of
  the keys), ``Meta.Check`` (reserved names and interfaces, duplicate relation names, the
  subordinate's container-scoped ``requires``, storage, devices), ``checkV2`` and
  ``ensureUnambiguousFormat`` (v1-only keys), ``parseCharmUser``;
- ``internal/charm/extra_bindings.go``: ``validateMetaExtraBindings``;
- ``internal/charm/config.go``: ``ReadConfig`` (option types and defaults);
- ``internal/charm/url.go``: ``validName`` (the charm name);
- juju/names ``relation.go``: ``RelationSnippet`` (relation endpoint names).

One rule is the model's own (a peer endpoint with container scope): Juju accepts it, but
``state/relation.go`` scopes a container endpoint per principal unit, so such a peer relation
never has a remote unit; the message says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: internal/charm/url.go ``validName``.
CHARM_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$")
#: juju/names relation.go ``RelationSnippet``.
RELATION_NAME_RE = re.compile(r"^[a-z][a-z0-9]*([_-][a-z0-9]+)*$")
ROLES = ("provides", "requires", "peers")
SCOPES = ("global", "container")
OPTION_TYPES = ("string", "int", "float", "boolean", "secret")
CHARM_USERS = ("root", "sudoer", "non-root")
#: Keys that only metadata v1 may hold (Juju 3.6 charms are v2: they carry a manifest).
V1_ONLY_KEYS = ("series", "min-juju-version", "deployment")
STORAGE_TYPES = ("block", "filesystem")
_STORAGE_RANGE = re.compile(r"^(\d+)([-+]|-\d+)$")


def _reserved(charm_name: str, name: str) -> bool:
    """meta.go ``reservedName``: ``juju`` and ``juju-*``, except for charms named juju-*."""
    if charm_name.startswith("juju-"):
        return False
    return name == "juju" or name.startswith("juju-")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _endpoint(
    role: str, name: Any, spec: Any, charm_name: str, subordinate: bool, where: str
) -> tuple[list[str], str, str]:
    """Problems of one endpoint declaration, and its (interface, scope)."""
    problems: list[str] = []
    label = f"relation {name!r} ({role})"
    if not isinstance(name, str) or not RELATION_NAME_RE.match(name):
        problems.append(
            f"{where}: {label}: invalid relation name (lower-case letters and digits, words "
            "joined by - or _, starting with a letter)"
        )
    if isinstance(spec, str):
        spec = {"interface": spec}
    if not isinstance(spec, Mapping):
        problems.append(f"{where}: {label}: must be an interface name or a mapping")
        return problems, "", "global"
    interface = spec.get("interface")
    if not isinstance(interface, str) or not interface:
        problems.append(f"{where}: {label}: `interface` must be a non-empty string")
        interface = ""
    scope = spec.get("scope", "global")
    if scope not in SCOPES:
        problems.append(f"{where}: {label}: scope must be global or container, got {scope!r}")
        scope = "global"
    limit = spec.get("limit")
    if limit is not None and not _is_int(limit):
        problems.append(f"{where}: {label}: limit must be a whole number, got {limit!r}")
    optional = spec.get("optional", False)
    if not isinstance(optional, bool):
        problems.append(f"{where}: {label}: optional must be true or false, got {optional!r}")
    if isinstance(name, str):
        # Container-scoped requires of subordinates may use juju-* (juju-info).
        exempt = subordinate and role == "requires" and scope == "container"
        if not exempt and _reserved(charm_name, name):
            problems.append(
                f'{where}: charm "{charm_name}" using a reserved relation name: "{name}"'
            )
    if role != "requires" and interface and _reserved(charm_name, interface):
        problems.append(
            f'{where}: charm "{charm_name}" relation "{name}" using a reserved interface: '
            f'"{interface}"'
        )
    if role == "peers" and scope == "container":
        problems.append(
            f"{where}: peer relation {name!r} has container scope: Juju scopes a container "
            "endpoint per principal unit, so this peer relation would never have a remote unit"
        )
    return problems, interface, str(scope)


def _storage(meta: Mapping[str, Any], charm_name: str, where: str) -> list[str]:
    problems: list[str] = []
    storage = meta.get("storage")
    if storage is None:
        return problems
    if not isinstance(storage, Mapping):
        return [f"{where}: `storage` must be a mapping"]
    for name, store in storage.items():
        label = f'{where}: charm "{charm_name}" storage "{name}"'
        if not isinstance(store, Mapping):
            problems.append(f"{label}: must be a mapping")
            continue
        kind = store.get("type")
        if not kind:
            problems.append(f"{label}: type must be specified")
        elif kind not in STORAGE_TYPES:
            problems.append(f"{label}: type must be block or filesystem, got {kind!r}")
        if store.get("location") and kind != "filesystem":
            problems.append(f'{label}: location may not be specified for "type: {kind}"')
        multiple = store.get("multiple")
        if isinstance(multiple, Mapping) and "range" in multiple:
            count = multiple["range"]
            if _is_int(count):
                if count <= 0:
                    problems.append(f"{label}: invalid count {count}")
            elif not isinstance(count, str) or not _STORAGE_RANGE.match(count):
                problems.append(f"{label}: range {count!r} does not match 'm', 'm-n', or 'm+'")
            else:
                _, high = _STORAGE_RANGE.match(count).groups()  # type: ignore[union-attr]
                if len(high) > 1 and int(high[1:]) == 0:
                    problems.append(f"{label}: invalid maximum count 0")
    return problems


def _devices(meta: Mapping[str, Any], charm_name: str, where: str) -> list[str]:
    problems: list[str] = []
    devices = meta.get("devices")
    if devices is None:
        return problems
    if not isinstance(devices, Mapping):
        return [f"{where}: `devices` must be a mapping"]
    for name, device in devices.items():
        label = f'{where}: charm "{charm_name}" device "{name}"'
        if not isinstance(device, Mapping):
            problems.append(f"{label}: must be a mapping")
            continue
        if not device.get("type"):
            problems.append(f"{label}: type must be specified")
        low, high = device.get("countmin", 1), device.get("countmax", 1)
        for key, value in (("countmin", low), ("countmax", high)):
            if not _is_int(value) or value < 0:
                problems.append(f"{label}: invalid device count {key}={value!r}")
        if _is_int(low) and _is_int(high) and low >= 0 and high >= 0 and low > high:
            problems.append(
                f"{label}: maximum count {high} can not be smaller than minimum count {low}"
            )
    return problems


def _option_default_ok(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind in ("string", "secret"):
        if not isinstance(value, str):
            return False
        return kind == "string" or value == "" or value.startswith("secret:")
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, bool)  # boolean


def _config(meta: Mapping[str, Any], where: str) -> list[str]:
    config = meta.get("config")
    if config is None:
        return []
    if not isinstance(config, Mapping):
        return [f"{where}: `config` must be a mapping with `options`"]
    options = config.get("options")
    if options is None:
        return [] if "options" in config else [f"{where}: invalid config: empty configuration"]
    if not isinstance(options, Mapping):
        return [f"{where}: config `options` must be a mapping"]
    problems = []
    for name, option in options.items():
        if not isinstance(option, Mapping):
            problems.append(f"{where}: invalid config: option {name!r} must be a mapping")
            continue
        kind = option.get("type") or "string"
        if kind not in OPTION_TYPES:
            problems.append(f"{where}: invalid config: option {name!r} has unknown type {kind!r}")
            continue
        default = option.get("default")
        if not _option_default_ok(str(kind), default):
            problems.append(
                f"{where}: invalid config default: option {name!r} expected {kind}, "
                f"got {default!r}"
            )
    return problems


def metadata_problems(meta: Mapping[str, Any], charm: str) -> list[str]:
    """Every reason Juju 3.6 would refuse this charm's metadata (empty: none).

    Args:
        meta: the metadata as one mapping (charmcraft.yaml, or metadata.yaml with ``config``
            holding config.yaml's content).
        charm: how to name the charm in the messages (its path or name).
    """
    where = charm
    if not isinstance(meta, Mapping):
        return [f"{where}: charm metadata must be a mapping"]
    problems: list[str] = []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: metadata: name: expected string, got {name!r}")
        charm_name = str(name or "")
    else:
        charm_name = name
        if not CHARM_NAME_RE.match(name):
            problems.append(f"{where}: invalid charm name {name!r}")
    for key in ("summary", "description"):
        if not isinstance(meta.get(key), str):
            problems.append(f"{where}: metadata: {key}: expected string, got {meta.get(key)!r}")
    subordinate = meta.get("subordinate", False)
    if not isinstance(subordinate, bool):
        problems.append(f"{where}: metadata: subordinate: expected bool, got {subordinate!r}")
        subordinate = bool(subordinate)
    for key in V1_ONLY_KEYS:
        if key in meta:
            problems.append(f"{where}: {key} is not valid in charm metadata v2 (Juju 3.6)")
    charm_user = meta.get("charm-user")
    if charm_user is not None and charm_user not in CHARM_USERS:
        problems.append(
            f"{where}: parsing charm-user: invalid charm-user {charm_user!r} expected one of "
            "root, sudoer or non-root"
        )

    seen: dict[str, str] = {}
    container_requires = False
    for role in ROLES:
        section = meta.get(role)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            problems.append(f"{where}: `{role}` must be a mapping of relation names")
            continue
        for rel_name, spec in section.items():
            found, _, scope = _endpoint(role, rel_name, spec, charm_name, subordinate, where)
            problems += found
            if role == "requires" and scope == "container":
                container_requires = True
            if rel_name in seen:
                problems.append(
                    f'{where}: charm "{charm_name}" using a duplicated relation name: '
                    f'"{rel_name}" (in {seen[rel_name]} and {role})'
                )
            else:
                seen[str(rel_name)] = role

    if "extra-bindings" in meta:
        bindings = meta["extra-bindings"]
        if not isinstance(bindings, Mapping) or not bindings:
            problems.append(
                f'{where}: charm "{charm_name}" has invalid extra bindings: extra bindings '
                "cannot be empty when specified"
            )
        else:
            clash = sorted(str(b) for b in bindings if b in seen)
            if clash:
                problems.append(
                    f'{where}: charm "{charm_name}" has invalid extra bindings: relation names '
                    f"({', '.join(clash)}) cannot be used in extra bindings"
                )
            valued = sorted(str(b) for b, v in bindings.items() if v is not None)
            if valued:
                problems.append(
                    f"{where}: extra-bindings {', '.join(valued)}: take no value (leave empty)"
                )

    if subordinate and not container_requires:
        problems.append(
            f'{where}: subordinate charm "{charm_name}" lacks "requires" relation with '
            "container scope"
        )
    problems += _storage(meta, charm_name, where)
    problems += _devices(meta, charm_name, where)
    problems += _config(meta, where)
    return problems

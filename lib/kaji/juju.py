"""What Juju tells a unit: binding addresses, attached resources, the remote units' bags.

Small readers every kaji charm needs, in one place, each tolerant of what Juju, ops.testing and
the offline model raise when a thing is not there.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, TypeVar

import ops

from kaji.interfaces import Refusal, read_or_refuse

T = TypeVar("T")

__all__ = ["attached_resource", "binding_address", "ingress_addresses", "read_unit_bags"]


def binding_address(
    model: ops.Model, endpoint: str, kind: Literal["ingress", "bind"] = "ingress"
) -> str | None:
    """The unit's address on ``endpoint``; None while Juju has none.

    ``ingress``: what others reach it at (what it advertises); ``bind``: what it listens on.
    """
    binding = model.get_binding(endpoint)
    if binding is None:
        return None
    try:
        network = binding.network
        address = network.ingress_address if kind == "ingress" else network.bind_address
    except (ops.ModelError, RuntimeError):
        return None
    return None if address is None else str(address)


def ingress_addresses(model: ops.Model, endpoint: str) -> list[str]:
    """Every ingress address of the unit on ``endpoint`` (empty while Juju has none)."""
    binding = model.get_binding(endpoint)
    if binding is None:
        return []
    try:
        return [str(a) for a in binding.network.ingress_addresses]
    except (ops.ModelError, RuntimeError):
        return []


def attached_resource(model: ops.Model, name: str) -> str | None:
    """The path of resource ``name`` when one is attached and not empty, else None.

    Juju raises ModelError for a resource that was never attached; ops.testing and the offline
    model raise NameError or RuntimeError for one they were not given.
    """
    try:
        path = model.resources.fetch(name)
    except (ops.ModelError, NameError, RuntimeError):
        return None
    return str(path) if path.exists() and path.stat().st_size > 0 else None


def read_unit_bags(
    relation: ops.Relation,
    units: Iterable[ops.Unit],
    read: Callable[[ops.Unit, Mapping[str, str]], T | None],
    *,
    what: str,
    log: logging.Logger,
) -> tuple[list[tuple[ops.Unit, T]], list[Refusal]]:
    """Each unit's bag on ``relation`` through ``read(unit, bag)``, in unit-name order.

    Returns what was read (units that sent nothing left out) and the refusals of malformed bags
    (logged, naming the unit and the key: :func:`kaji.interfaces.read_or_refuse`).
    """
    found: list[tuple[ops.Unit, T]] = []
    refused: list[Refusal] = []
    for unit in sorted(units, key=lambda u: u.name):
        data = read_or_refuse(
            functools.partial(read, unit),
            relation.data[unit],
            sender=unit.name,
            what=what,
            log=log,
        )
        if isinstance(data, Refusal):
            refused.append(data)
        elif data is not None:
            found.append((unit, data))
    return found, refused

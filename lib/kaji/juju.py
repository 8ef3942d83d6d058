"""What Juju tells a unit about its machine: binding addresses and attached resources.

Small readers every kaji charm needs, in one place, each tolerant of what Juju, ops.testing and
the offline model raise when a thing is not there.
"""

from __future__ import annotations

from typing import Literal

import ops

__all__ = ["attached_resource", "binding_address", "ingress_addresses"]


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

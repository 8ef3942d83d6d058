"""Pod subnet allocation as the cni leader does it: stable, deterministic, partial on exhaustion.

Builds on :func:`kaji.interfaces.cni_network.allocate_subnets` (which keeps existing allocations
of present units, frees departed units' subnets and gives new units the lowest free subnets in
unit-name order) and adds what the charm needs on top: when the cluster CIDR runs out, the
units that fit still get their subnets and only the ones that do not are reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kaji.interfaces import RelationDataError
from kaji.interfaces.cni_network import SubnetsExhaustedError, allocate_subnets


@dataclass(frozen=True)
class Allocation:
    """The leader's result: subnets per unit, and the units left without one."""

    subnets: dict[str, str]
    unallocated: tuple[str, ...] = ()


def allocate(
    cluster_cidr: str, units: Iterable[str], existing: Mapping[str, str], prefix_length: int
) -> Allocation:
    """Allocate a subnet to every unit that fits; list (in unit-name order) those that do not.

    Raises:
        RelationDataError: malformed input (bad CIDR, overlapping existing allocations, a
            prefix that does not fit) — not exhaustion, which goes into ``unallocated``.
    """
    wanted = sorted(set(units))
    try:
        return Allocation(allocate_subnets(cluster_cidr, wanted, existing, prefix_length))
    except SubnetsExhaustedError:
        pass
    # Exhausted: keep the present units' subnets and hand out what is left in name order.
    # Every new unit asks for the same size, so once one does not fit, none after it does.
    subnets = {unit: cidr for unit, cidr in existing.items() if unit in wanted}
    new = [unit for unit in wanted if unit not in subnets]
    for index, unit in enumerate(new):
        try:
            subnets = allocate_subnets(cluster_cidr, [*subnets, unit], subnets, prefix_length)
        except SubnetsExhaustedError:
            return Allocation(dict(sorted(subnets.items())), tuple(new[index:]))
    return Allocation(dict(sorted(subnets.items())))  # pragma: no cover - first call succeeds


def is_exhausted(
    cluster_cidr: str, existing: Mapping[str, str], unit: str, prefix_length: int
) -> bool:
    """Whether `unit` would get no subnet even if it were the next one allocated."""
    try:
        result = allocate(cluster_cidr, [*existing, unit], existing, prefix_length)
    except RelationDataError:
        return False
    return unit in result.unallocated

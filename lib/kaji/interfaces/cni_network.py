"""Peer relation ``cni:network``: per-node pod subnets and underlay addresses.

Unit databag (each cni unit)::

    node-name         str   the Kubernetes node name of its principal (DNS-1123 subdomain)
    underlay-address  str   the machine address pod traffic to this node is routed via; a
                            reader checks it is the unit's ``ingress-address`` (from Juju)

Application databag (cni leader)::

    cluster-cidr  str           the cluster's pod network (CIDR)
    allocations   {unit: str}   pod subnet (CIDR) per cni unit; pairwise disjoint and inside
                                cluster-cidr

The leader computes allocations with :func:`allocate_subnets`, which keeps every existing
allocation and gives new units the lowest free subnets in unit-name order, so any order of
joins converges to the same result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from kaji.interfaces._base import (
    Fields,
    RelationDataError,
    check_cidr,
    check_dns_subdomain,
    check_ip,
    check_subnet_of,
    check_unit_map,
    check_unit_name,
    encode,
    expect_str_map,
    network,
)

RELATION = "network"
INTERFACE = "kaji-cni-network"


@dataclass(frozen=True)
class CniNetworkUnit:
    """What each cni unit tells its peers."""

    node_name: str
    underlay_address: str

    def __post_init__(self) -> None:
        check_dns_subdomain("node-name", self.node_name)
        address = check_ip("underlay-address", self.underlay_address)
        object.__setattr__(self, "underlay_address", address)

    def to_databag(self) -> dict[str, str]:
        """Encode for the unit's own peer databag."""
        return encode({"node-name": self.node_name, "underlay-address": self.underlay_address})

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> CniNetworkUnit:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag)
        return cls(
            node_name=fields.string("node-name"),
            underlay_address=fields.string("underlay-address"),
        )


def read_network_unit(databag: Mapping[str, str]) -> CniNetworkUnit | None:
    """A cni unit's peer data, or None while it has written nothing (no address check)."""
    if not Fields(databag):
        return None
    return CniNetworkUnit.from_databag(databag)


def read_peer_network_unit(databag: Mapping[str, str]) -> CniNetworkUnit | None:
    """Another cni unit's peer data, its ``underlay-address`` checked against Juju's.

    Every node routes a peer's pod subnet via that peer's ``underlay-address``, so the claim
    must be the address Juju itself reports for the unit on this relation: the
    ``ingress-address`` Juju puts in the same databag (what the unit's own ``network``
    binding gives it). Anything else (another node's address, 0.0.0.0, a broadcast or
    service address) is refused.

    Raises:
        RelationDataError: malformed data, no ``ingress-address`` to check the claim against,
            or a claim that is not that address.
    """
    data = read_network_unit(databag)
    if data is None:
        return None
    juju = databag.get("ingress-address")
    try:
        known = ip_address(juju).compressed if isinstance(juju, str) else None
    except ValueError:
        known = None
    if known is None:
        raise RelationDataError(
            "underlay-address", "Juju gave no ingress-address to check the claim against"
        )
    if data.underlay_address != known:
        raise RelationDataError(
            "underlay-address",
            f"{data.underlay_address} is not the unit's ingress address {known} (from Juju)",
        )
    return data


def _check_disjoint(key: str, subnets: Mapping[str, str]) -> None:
    ordered = sorted(
        ((network(cidr), unit) for unit, cidr in subnets.items()),
        key=lambda item: (int(item[0].network_address), item[0].prefixlen),
    )
    highest: tuple[int, str, str] | None = None  # (broadcast as int, unit, cidr)
    for net, unit in ordered:
        if highest is not None and int(net.network_address) <= highest[0]:
            raise RelationDataError(key, f"{unit}'s {net} overlaps {highest[1]}'s {highest[2]}")
        if highest is None or int(net.broadcast_address) > highest[0]:
            highest = (int(net.broadcast_address), unit, net.compressed)


@dataclass(frozen=True)
class CniNetworkApp:
    """What the cni leader tells every cni unit: the pod network and each node's subnet."""

    cluster_cidr: str
    allocations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cluster_cidr = check_cidr("cluster-cidr", self.cluster_cidr)
        allocations = {
            unit: check_subnet_of(f"allocations[{unit[:100]}]", cidr, cluster_cidr)
            for unit, cidr in check_unit_map("allocations", self.allocations).items()
        }
        _check_disjoint("allocations", allocations)
        object.__setattr__(self, "cluster_cidr", cluster_cidr)
        object.__setattr__(self, "allocations", allocations)

    def subnet_for(self, unit_name: str) -> str | None:
        """The pod subnet allocated to `unit_name`, if any."""
        return self.allocations.get(unit_name)

    def to_databag(self) -> dict[str, str]:
        """Encode for the cni application peer databag (leader only)."""
        return encode(
            {"cluster-cidr": self.cluster_cidr, "allocations": dict(self.allocations)},
            unbounded=("allocations",),
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> CniNetworkApp:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag, unbounded=("allocations",))
        return cls(
            cluster_cidr=fields.string("cluster-cidr"),
            allocations=expect_str_map("allocations", fields.required("allocations")),
        )


def read_network_app(databag: Mapping[str, str]) -> CniNetworkApp | None:
    """The cni leader's peer data, or None while it has written nothing."""
    if not Fields(databag, unbounded=("allocations",)):
        return None
    return CniNetworkApp.from_databag(databag)


class SubnetsExhaustedError(RelationDataError):
    """The cluster CIDR has no free subnet of the asked size left (the input itself is valid)."""


def allocate_subnets(
    cluster_cidr: str, units: Iterable[str], existing: Mapping[str, str], prefix_length: int
) -> dict[str, str]:
    """Give every unit in `units` a pod subnet of `prefix_length` inside `cluster_cidr`.

    Existing allocations of units still present are kept unchanged; departed units' subnets
    are freed. A new unit ``app/N`` gets the N-th subnet of the cluster CIDR when that one is
    free, so the table does not depend on the order units were seen in; only when it is taken
    or out of range (unit numbers grow with churn) does it get the lowest free subnet, new
    units taken in unit-name order.

    Raises:
        SubnetsExhaustedError: no room left for a new unit (key ``allocations``).
        RelationDataError: bad input or overlapping existing allocations.
    """
    app = CniNetworkApp(cluster_cidr, existing)
    cluster = network(app.cluster_cidr)
    if not cluster.prefixlen <= prefix_length <= cluster.max_prefixlen:
        raise RelationDataError("prefix-length", f"/{prefix_length} does not fit in {cluster}")
    wanted = sorted({check_unit_name("units", unit) for unit in units}, key=_unit_order)
    result = {unit: app.allocations[unit] for unit in wanted if unit in app.allocations}
    used = [network(cidr) for cidr in result.values()]
    taken = {net for net in used if net.prefixlen == prefix_length}
    other_sizes = [net for net in used if net.prefixlen != prefix_length]
    count = 1 << (prefix_length - cluster.prefixlen)
    size = 1 << (cluster.max_prefixlen - prefix_length)

    def is_free(candidate: IPv4Network | IPv6Network) -> bool:
        return candidate not in taken and not any(candidate.overlaps(n) for n in other_sizes)

    new = [u for u in wanted if u not in result]
    # First every unit that can have its own numbered subnet, then the rest, lowest free first.
    for unit in new:
        number = _unit_order(unit)[1]
        if number < count:
            preferred = ip_network((int(cluster.network_address) + number * size, prefix_length))
            if is_free(preferred):
                taken.add(preferred)
                result[unit] = preferred.compressed
    for unit in (u for u in new if u not in result):
        chosen = next((c for c in cluster.subnets(new_prefix=prefix_length) if is_free(c)), None)
        if chosen is None:
            raise SubnetsExhaustedError(
                "allocations", f"{cluster} has no free /{prefix_length} left"
            )
        taken.add(chosen)
        result[unit] = chosen.compressed
    return dict(sorted(result.items()))


def _unit_order(unit: str) -> tuple[str, int]:
    app, _, number = unit.rpartition("/")
    return app, int(number)

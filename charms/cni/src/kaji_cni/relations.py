"""kaji-cni's relations: the principal's ``cni`` relation and the ``network`` peers.

Everything read or written goes through :mod:`kaji.interfaces` (typed data only); malformed
data is refused through :func:`kaji.interfaces.read_or_refuse`, which logs it and names the
sender and the key for the status.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import ops

from kaji.interfaces import Refusal, read_or_refuse, update_databag
from kaji.interfaces.cni import CniPrincipalUnit, CniUnit, read_principal_unit
from kaji.interfaces.cni_network import (
    CniNetworkApp,
    CniNetworkUnit,
    read_network_app,
    read_peer_network_unit,
)
from kaji.juju import read_unit_bags
from kaji_cni.dataplane import Node
from kaji_cni.literals import PRINCIPAL

logger = logging.getLogger(__name__)


def principal_relation(model: ops.Model) -> ops.Relation | None:
    """The ``cni`` relation to this unit's principal (the one of control-plane or worker)."""
    # cni relates to both control-plane and worker; only this unit's principal has units.
    return next((r for r in model.relations[PRINCIPAL] if r.units), None)


def read_allocations(peers: ops.Relation, app: ops.Application) -> CniNetworkApp | Refusal | None:
    """The leader's allocation table from the peer application bag; None while it is empty."""
    bag = peers.data[app]
    what = "peer application data"
    return read_or_refuse(read_network_app, bag, sender=app.name, what=what, log=logger)


def read_principal(
    relation: ops.Relation, unit: ops.Unit, *, cluster_cidr: str
) -> CniPrincipalUnit | Refusal | None:
    """The principal unit's node name and service CIDR; None while it has sent none."""
    read = functools.partial(read_principal_unit, cluster_cidr=cluster_cidr)
    return read_or_refuse(read, relation.data[unit], sender=unit.name, what="cni data", log=logger)


def read_peer_nodes(
    peers: ops.Relation, units: Iterable[ops.Unit], table: CniNetworkApp
) -> tuple[list[Node], list[Refusal]]:
    """The peers with a subnet to route to, and the peer data refused (malformed, unverified)."""
    subnets = {unit: s for unit in units if (s := table.subnet_for(unit.name)) is not None}
    found, refused = read_unit_bags(
        peers, subnets, lambda _, bag: read_peer_network_unit(bag), what="network data", log=logger
    )
    return [Node(unit.name, subnets[unit], data.underlay_address) for unit, data in found], refused


def publish_allocations(peers: ops.Relation, app: ops.Application, table: CniNetworkApp) -> None:
    """Leader: the allocation table into the peer application bag (only what changed)."""
    update_databag(peers.data[app], table.to_databag())


def publish_claim(peers: ops.Relation, unit: ops.Unit, claim: CniNetworkUnit) -> None:
    """This unit's node name and underlay address into its peer bag."""
    update_databag(peers.data[unit], claim.to_databag())


def publish_to_principal(relation: ops.Relation, unit: ops.Unit, data: CniUnit) -> None:
    """The pod network, the CNI config directory and this node's subnet, for the principal."""
    update_databag(relation.data[unit], data.to_databag())

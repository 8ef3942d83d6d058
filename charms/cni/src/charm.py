#!/usr/bin/env python3
"""Charm entry point for kaji-cni: wires Juju's events to one reconcile of the pod network."""

from __future__ import annotations

import logging

import ops
from kaji_cni import allocation, dataplane, relations, status
from kaji_cni.config import CniConfig
from kaji_cni.literals import CNI_CONF_DIR, PEERS, PRINCIPAL
from kaji_cni.status import Halt

from kaji.config import ConfigError
from kaji.host import host_from_environment
from kaji.interfaces import Refusal, RelationDataError
from kaji.interfaces.cni import CniPrincipalUnit, CniUnit
from kaji.interfaces.cni_network import CniNetworkApp, CniNetworkUnit
from kaji.juju import binding_address
from kaji.reconciler import ReconcilingCharm

logger = logging.getLogger(__name__)


class CniCharm(ReconcilingCharm):
    """kaji-cni: a pod subnet per node and routes (host-gw) or VXLAN between nodes."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._status: ops.StatusBase | None = None
        self._departing: ops.Unit | None = None
        self._leaving = False
        framework.observe(self.on[PEERS].relation_departed, self._on_peer_departed)
        framework.observe(self.on[PEERS].relation_broken, self._on_peer_broken)
        framework.observe(self.on.remove, self._on_remove)

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """The usual events; the peers' departures are observed below (they say who leaves)."""
        principal = self.on[PRINCIPAL]
        return [
            *self.lifecycle_events(),
            *self.relation_events(departures=False),
            principal.relation_departed,
            principal.relation_broken,
        ]

    def _on_peer_departed(self, event: ops.RelationDepartedEvent) -> None:
        self._departing = event.departing_unit
        self._leaving = event.departing_unit == self.unit
        self.reconcile()

    def _on_peer_broken(self, _: ops.RelationBrokenEvent) -> None:
        self._leaving = True  # the peer relation breaks only when this unit goes away
        self.reconcile()

    def _on_remove(self, _: ops.RemoveEvent) -> None:
        try:
            dataplane.remove_node(host_from_environment())
        except dataplane.DataplaneError as exc:
            logger.warning("could not remove the pod network from this machine: %s", exc)

    def assess_status(self) -> ops.StatusBase | None:
        """The status this dispatch's reconcile reached; None (status kept) when none ran."""
        return self._status

    # -- the reconcile ---------------------------------------------------------------------

    def reconcile(self) -> None:
        """Validate everything, then act; a step that cannot go on halts with its status."""
        try:
            self._status = self._reconcile()
        except Halt as halt:
            self._status = halt.status

    def _reconcile(self) -> ops.StatusBase:
        config = self._load_config()  # 1. the options
        peers = self._peer_relation()  # 2. the peer relation
        table = self._read_allocations(peers, config)  # 3. the leader's table, for this cidr
        if self._leaving:  # 4. a unit on its way out changes nothing more
            return status.LEAVING
        table = self._allocate_subnets(peers, config, table)  # 5. leader: a subnet per unit
        relation, principal = self._read_principal(config)  # 6. the principal's node name
        underlay = self._read_underlay()  # 7. this machine's address on the network binding
        self._publish_claim(peers, principal, underlay)  # 8. tell the peers
        table, local = self._place_node(config, table, underlay)  # 9. this node's pod subnet
        nodes, refused = self._read_peer_nodes(peers, table)  # 10. the nodes to reach
        programmed = self._program_node(config, local, nodes, principal)  # 11. this machine
        self._publish_to_principal(relation, table, local)  # 12. tell the principal
        return status.active(
            config.backend, local.subnet, len(nodes), refused, programmed=programmed
        )

    def _load_config(self) -> CniConfig:
        try:
            return CniConfig.from_options(self.config)
        except ConfigError as exc:
            raise Halt(status.invalid_config(exc)) from None

    def _peer_relation(self) -> ops.Relation:
        peers = self.model.get_relation(PEERS)
        if peers is None:
            raise Halt(status.WAITING_FOR_PEERS)
        return peers

    def _peer_units(self, peers: ops.Relation) -> frozenset[ops.Unit]:
        """The other units on the peer relation, without the one departing in this hook."""
        return frozenset(u for u in peers.units if u != self._departing)

    def _read_allocations(self, peers: ops.Relation, config: CniConfig) -> CniNetworkApp | None:
        table = relations.read_allocations(peers, self.app)
        if isinstance(table, Refusal):
            leader = self.unit.is_leader()
            raise Halt(status.invalid_allocations(table, leader=leader, app=self.app.name))
        if table is not None and table.cluster_cidr != config.cidr and table.allocations:
            raise Halt(status.cidr_frozen(config.cidr, table.cluster_cidr))
        return table

    def _allocate_subnets(
        self, peers: ops.Relation, config: CniConfig, table: CniNetworkApp | None
    ) -> CniNetworkApp | None:
        """Leader: subnets for every present unit; written if they changed."""
        if not self.unit.is_leader():  # allocation does not wait for this unit's principal
            return table
        existing = dict(table.allocations) if table is not None else {}
        units = [self.unit.name, *(u.name for u in self._peer_units(peers))]
        try:
            result = allocation.allocate(config.cidr, units, existing, config.node_prefix)
        except RelationDataError as exc:
            raise Halt(status.cannot_allocate(exc.reason)) from None
        if result.unallocated:
            logger.warning("no pod subnet left for %s", ", ".join(result.unallocated))
        new = CniNetworkApp(config.cidr, result.subnets)
        relations.publish_allocations(peers, self.app, new)
        return new

    def _read_principal(self, config: CniConfig) -> tuple[ops.Relation, CniPrincipalUnit]:
        relation = relations.principal_relation(self.model)
        if relation is None:
            raise Halt(status.WAITING_FOR_PRINCIPAL)
        unit = next(iter(relation.units))
        principal = relations.read_principal(relation, unit, cluster_cidr=config.cidr)
        if isinstance(principal, Refusal):
            raise Halt(status.invalid_principal_data(principal))
        if principal is None:
            raise Halt(status.waiting_for_node_name(unit.name))
        return relation, principal

    def _read_underlay(self) -> str:
        underlay = binding_address(self.model, PEERS, "ingress")
        if underlay is None:
            raise Halt(status.WAITING_FOR_ADDRESS)
        return underlay

    def _publish_claim(
        self, peers: ops.Relation, principal: CniPrincipalUnit, underlay: str
    ) -> None:
        claim = CniNetworkUnit(principal.node_name, underlay)
        relations.publish_claim(peers, self.unit, claim)

    def _place_node(
        self, config: CniConfig, table: CniNetworkApp | None, underlay: str
    ) -> tuple[CniNetworkApp, dataplane.Node]:
        """This node on the pod network, once the leader's table gives it a subnet."""
        if table is None or table.cluster_cidr != config.cidr:
            raise Halt(status.WAITING_FOR_ALLOCATIONS)
        me, prefix = self.unit.name, config.node_prefix
        subnet = table.subnet_for(me)
        if subnet is not None:
            return table, dataplane.Node(me, subnet, underlay)
        if allocation.is_exhausted(table.cluster_cidr, table.allocations, me, prefix):
            raise Halt(status.exhausted(prefix, table.cluster_cidr))
        raise Halt(status.WAITING_FOR_SUBNET)

    def _read_peer_nodes(
        self, peers: ops.Relation, table: CniNetworkApp
    ) -> tuple[list[dataplane.Node], list[Refusal]]:
        """The peers to route to; malformed or unverifiable peer data is refused and named."""
        return relations.read_peer_nodes(peers, self._peer_units(peers), table)

    def _program_node(
        self,
        config: CniConfig,
        local: dataplane.Node,
        peers: list[dataplane.Node],
        principal: CniPrincipalUnit,
    ) -> bool:
        """Conflist, recorded plan and (on a real machine) the kernel; whether it programmed."""
        try:
            result = dataplane.configure_node(
                host_from_environment(),
                config,
                local,
                peers,
                service_cidr=principal.service_cidr,
            )
        except dataplane.DataplaneError as exc:
            logger.error("programming the pod network failed: %s", exc)
            raise Halt(status.dataplane_failed(config.backend, exc)) from None
        return result.programmed

    def _publish_to_principal(
        self, relation: ops.Relation, table: CniNetworkApp, local: dataplane.Node
    ) -> None:
        published = CniUnit(table.cluster_cidr, CNI_CONF_DIR, local.subnet)
        relations.publish_to_principal(relation, self.unit, published)


if __name__ == "__main__":  # pragma: nocover
    ops.main(CniCharm)

#!/usr/bin/env python3
"""Charm entry point for kaji-cni: reads Juju's picture, allocates subnets, calls podnet."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import allocation
import ops
import podnet

from kaji.host import host_from_environment
from kaji.interfaces import RelationDataError, update_databag
from kaji.interfaces.cni import CniPrincipalUnit, CniUnit, read_principal_unit
from kaji.interfaces.cni_network import (
    CniNetworkApp,
    CniNetworkUnit,
    read_network_app,
    read_peer_network_unit,
)
from kaji.operator import ReconcilingCharm

logger = logging.getLogger(__name__)

PRINCIPAL = "cni"
PEERS = "network"
#: How many ignored peers a status message names before it only counts the rest.
NAMED_IN_STATUS = 3


@dataclass(frozen=True)
class _Cluster:
    """The cluster-wide picture (config, peers, allocations), validated before acting."""

    settings: podnet.Settings
    peers: ops.Relation
    peer_units: frozenset[ops.Unit]
    app: CniNetworkApp | None


@dataclass(frozen=True)
class _Machine:
    """This node's side: its principal's data and its underlay address."""

    relation: ops.Relation
    principal: CniPrincipalUnit
    underlay: str


class CniCharm(ReconcilingCharm):
    """kaji-cni: a pod subnet per node and routes (host-gw) or VXLAN between nodes."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._status: ops.StatusBase | None = None
        self._ignored: list[str] = []  # "<unit>'s <key>" of peer data this dispatch ignored
        self._departing: ops.Unit | None = None
        self._leaving = False
        framework.observe(self.on[PEERS].relation_departed, self._on_peer_departed)
        framework.observe(self.on[PEERS].relation_broken, self._on_peer_broken)
        framework.observe(self.on.remove, self._on_remove)

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Every usual event except the peer departures, which carry who is leaving."""
        skip = {f"{PEERS}_relation_departed", f"{PEERS}_relation_broken"}
        return [e for e in super().reconcile_events() if e.event_kind not in skip]

    def _on_peer_departed(self, event: ops.RelationDepartedEvent) -> None:
        self._departing = event.departing_unit
        self._leaving = event.departing_unit == self.unit
        self.reconcile()

    def _on_peer_broken(self, _: ops.RelationBrokenEvent) -> None:
        self._leaving = True  # the peer relation breaks only when this unit goes away
        self.reconcile()

    def _on_remove(self, _: ops.RemoveEvent) -> None:
        try:
            podnet.remove_node(host_from_environment())
        except podnet.DataplaneError as exc:
            logger.warning("could not remove the pod network from this machine: %s", exc)

    # -- reading ---------------------------------------------------------------------------

    def _principal_relation(self) -> ops.Relation | None:
        # cni relates to both control-plane and worker; only this unit's principal has units.
        return next((r for r in self.model.relations[PRINCIPAL] if r.units), None)

    def _underlay(self) -> str | None:
        binding = self.model.get_binding(PEERS)
        address = binding.network.ingress_address if binding is not None else None
        return str(address) if address is not None else None

    def _read_cluster(self) -> _Cluster | ops.StatusBase:
        try:
            settings = podnet.parse_settings(dict(self.config))
        except podnet.ConfigError as exc:
            return ops.BlockedStatus(f"invalid config {exc}")
        peers = self.model.get_relation(PEERS)
        if peers is None:
            return ops.WaitingStatus("waiting for the network peer relation")
        try:
            app = read_network_app(peers.data[self.app])
        except RelationDataError as exc:
            logger.error("%s's peer application data is invalid: %s", self.app.name, exc)
            if self.unit.is_leader():
                return ops.BlockedStatus(f"peer application data is invalid: {exc.key}")
            return ops.WaitingStatus(
                f"waiting for the leader to repair {self.app.name}'s peer data: {exc.key}"
            )
        if app is not None and app.cluster_cidr != settings.cidr and app.allocations:
            return ops.BlockedStatus(
                f"invalid config cidr: cannot change to {settings.cidr} after pod subnets were"
                f" allocated; set it back to {app.cluster_cidr}"
            )
        units = frozenset(u for u in peers.units if u != self._departing)
        return _Cluster(settings, peers, units, app)

    def _read_machine(self, settings: podnet.Settings) -> _Machine | ops.StatusBase:
        relation = self._principal_relation()
        if relation is None:
            return ops.WaitingStatus("waiting for the principal (cni relation)")
        principal_unit = next(iter(relation.units))
        try:
            principal = read_principal_unit(
                relation.data[principal_unit], cluster_cidr=settings.cidr
            )
        except RelationDataError as exc:
            logger.error("ignoring %s's cni data: %s", principal_unit.name, exc)
            message = f"{principal_unit.name} sent invalid cni data: {exc.key} ({exc.reason})"
            return ops.BlockedStatus(message if len(message) <= 300 else message[:297] + "...")
        if principal is None:
            return ops.WaitingStatus(f"waiting for the node name from {principal_unit.name}")
        underlay = self._underlay()
        if underlay is None:
            return ops.WaitingStatus("waiting for an address on the network binding")
        return _Machine(relation, principal, underlay)

    # -- acting ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Validate everything, then: peer data, allocations (leader), the node, the principal."""
        self._status = self._run()

    def assess_status(self) -> ops.StatusBase | None:
        """The status this dispatch's reconcile reached; None (status kept) when none ran."""
        return self._status

    def _allocate(self, view: _Cluster) -> CniNetworkApp | ops.StatusBase:
        """Leader: subnets for every present unit; write them if they changed."""
        settings, app = view.settings, view.app
        existing = dict(app.allocations) if app is not None else {}
        units = [self.unit.name, *(u.name for u in view.peer_units)]
        try:
            result = allocation.allocate(settings.cidr, units, existing, settings.node_prefix)
        except RelationDataError as exc:
            return ops.BlockedStatus(f"cannot allocate pod subnets: {exc.reason}")
        if result.unallocated:
            logger.warning("no pod subnet left for %s", ", ".join(result.unallocated))
        new = CniNetworkApp(settings.cidr, result.subnets)
        update_databag(view.peers.data[self.app], new.to_databag())
        return new

    def _exhausted(self, view: _Cluster, app: CniNetworkApp) -> bool:
        """Whether this unit would get no subnet even if it were next in line."""
        me = self.unit.name
        try:
            units = [*app.allocations, me]
            prefix = view.settings.node_prefix
            result = allocation.allocate(app.cluster_cidr, units, app.allocations, prefix)
        except RelationDataError:
            return False
        return me in result.unallocated

    def _peer_nodes(self, view: _Cluster, app: CniNetworkApp) -> list[podnet.Node]:
        """The peers to route to; malformed or unverifiable peer data is logged and skipped."""
        nodes = []
        for unit in sorted(view.peer_units, key=lambda u: u.name):
            subnet = app.subnet_for(unit.name)
            if subnet is None:
                continue
            try:
                data = read_peer_network_unit(view.peers.data[unit])
            except RelationDataError as exc:
                logger.error("ignoring %s's network data: %s", unit.name, exc)
                self._ignored.append(f"{unit.name}'s {exc.key}")
                continue
            if data is not None:
                nodes.append(podnet.Node(unit.name, subnet, data.underlay_address))
        return nodes

    def _ignored_note(self) -> str:
        if not self._ignored:
            return ""
        named = ", ".join(self._ignored[:NAMED_IN_STATUS])
        more = len(self._ignored) - NAMED_IN_STATUS
        if more > 0:
            named += f" and {more} more"
        return f"; ignoring {named} (see debug-log)"

    def _run(self) -> ops.StatusBase:
        cluster = self._read_cluster()
        if isinstance(cluster, ops.StatusBase):
            return cluster
        if self._leaving:
            return ops.MaintenanceStatus("leaving the pod network")
        app = cluster.app
        if self.unit.is_leader():  # allocation does not wait for this unit's principal
            allocated = self._allocate(cluster)
            if isinstance(allocated, ops.StatusBase):
                return allocated
            app = allocated
        machine = self._read_machine(cluster.settings)
        if isinstance(machine, ops.StatusBase):
            return machine
        me = CniNetworkUnit(machine.principal.node_name, machine.underlay)
        update_databag(cluster.peers.data[self.unit], me.to_databag())
        settings = cluster.settings
        if app is None or app.cluster_cidr != settings.cidr:
            return ops.WaitingStatus("waiting for the leader to allocate pod subnets")
        subnet = app.subnet_for(self.unit.name)
        if subnet is None:
            if self._exhausted(cluster, app):
                return ops.BlockedStatus(
                    f"no free /{settings.node_prefix} left in {app.cluster_cidr} for this"
                    " node; raise node-prefix for smaller node subnets or remove a node"
                )
            return ops.WaitingStatus("waiting for the leader to allocate this node's subnet")
        local = podnet.Node(self.unit.name, subnet, machine.underlay)
        self._ignored.clear()
        peers = self._peer_nodes(cluster, app)
        host = host_from_environment()
        try:
            podnet.configure_node(
                host, settings, local, peers, service_cidr=machine.principal.service_cidr
            )
        except podnet.DataplaneError as exc:
            logger.error("programming the pod network failed: %s", exc)
            return ops.BlockedStatus(f"{settings.backend}: {exc}"[:400])
        published = CniUnit(app.cluster_cidr, podnet.CNI_CONF_DIR, subnet)
        update_databag(machine.relation.data[self.unit], published.to_databag())
        message = f"{settings.backend}: pod subnet {subnet}, {len(peers)} peer(s)"
        message += self._ignored_note()
        if not podnet.programs_kernel(host):
            message += f"; sandbox: kernel not programmed, plan in {podnet.STATE_PATH}"
        return ops.ActiveStatus(message)


if __name__ == "__main__":  # pragma: nocover
    ops.main(CniCharm)

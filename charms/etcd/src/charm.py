#!/usr/bin/env python3
"""Charm entry point for kaji-etcd: a TLS etcd cluster that follows the application's units.

Wiring only (one ``reconcile()``, read-only status collection); the leader's CA, certificates
and membership, this machine's member, the relations and the statuses live in ``kaji_etcd``.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import ops
from kaji_etcd import EtcdError, literals, relations, status
from kaji_etcd.relations import Peers, dns_hostname, peer_unit_names

from kaji.config import ConfigError
from kaji.host import HostError, RecordingManager, host_from_environment
from kaji.juju import attached_resource, binding_address
from kaji.lazy import lazy_import
from kaji.reconciler import ReconcileRecord, ReconcilingCharm

if TYPE_CHECKING:
    from kaji_etcd import actions, binaries, membership
    from kaji_etcd import config as settings
    from kaji_etcd import member as workload

    from kaji.certs import KeyAndRequest
    from kaji.host import Host
else:  # a settled, recorded-only unit's update-status needs none of them (docs/performance.md)
    actions = lazy_import("kaji_etcd.actions")
    binaries = lazy_import("kaji_etcd.binaries")
    settings = lazy_import("kaji_etcd.config")
    membership = lazy_import("kaji_etcd.membership")
    workload = lazy_import("kaji_etcd.member")

logger = logging.getLogger(__name__)


class EtcdCharm(ReconcilingCharm):
    """kaji-etcd: one etcd member per unit, one TLS cluster per application."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        for endpoint in self.meta.relations:
            framework.observe(self.on[endpoint].relation_departed, self._on_departed)
        framework.observe(self.on.stop, self._on_stop)
        framework.observe(self.on.remove, self._on_remove)
        for action in self.meta.actions:
            framework.observe(getattr(self.on, f"{action.replace('-', '_')}_action"), self._act)
        self._out = status.Outcome()
        self._host: Host | None = None
        interval = literals.FULL_RECONCILE_INTERVAL
        self.remember_reconciles(self.host, literals.RECONCILED_FILE, max_age=interval)

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Every base event but relation-departed, which first looks at who departs."""
        return [*self.lifecycle_events(), *self.relation_events(departures=False)]

    def _on_departed(self, event: ops.RelationDepartedEvent) -> None:
        """A unit left; if this one, Juju keeps it leader as its view shrinks: it only leaves.

        (juju/juju worker/uniter/relation/resolver.go, worker/uniter/leadership/resolver.go)
        """
        if event.departing_unit == self.unit:
            membership.mark_leaving(self.host, self.unit.name)
        self.reconcile()

    def _on_stop(self, _: ops.EventBase) -> None:
        """The stop hook runs only when the unit is being removed."""
        membership.mark_leaving(self.host, self.unit.name)
        relation = self.model.get_relation(literals.PEER)
        if relation is not None and len(peer_unit_names(self.unit, relation)) > 1:
            self._leave()
        else:
            self.host.services.stop(literals.SERVICE)
            self._out.status = ops.MaintenanceStatus("stopped")

    def _on_remove(self, _: ops.EventBase) -> None:
        membership.mark_leaving(self.host, self.unit.name)
        self._out.status = ops.MaintenanceStatus("removing this unit")

    def _leaving(self) -> bool:  # this unit, not an earlier one of this machine, is going
        return self.host.read_text(literals.LEAVING_MARKER) == f"{self.unit.name}\n"

    @property
    def host(self) -> Host:
        """This machine; in a sandbox without etcd on PATH, etcd is only recorded."""
        if self._host is None:
            host = host_from_environment()
            if host.is_sandbox and host.services.runs_processes and not binaries.etcd_on_path():
                host.services = RecordingManager(host.path(literals.RECORDED_SERVICES_DIR))
            self._host = host
        return self._host

    def _member(self, *, install: bool = True) -> workload.Member:
        """This unit's member; ``install=False`` (actions, leaving) installs nothing."""
        config = settings.EtcdConfig.from_options(self.config)
        if (address := binding_address(self.model, literals.PEER)) is None:
            raise status.NotReady(status.NO_ADDRESS)
        fetch = install and not self.host.is_sandbox
        resource = attached_resource(self.model, literals.ETCD_RESOURCE) if fetch else None
        bind = binding_address(self.model, literals.PEER, "bind")
        return workload.Member.of_unit(
            self.host, config, self.unit.name, address, bind, install=install, resource=resource
        )

    def reconcile(self) -> None:
        """Validate config, install, exchange certificates, manage membership, serve clients."""
        self._out = status.Outcome()
        if self._leaving():
            self._leave()  # retried until it succeeds; never writes application data
            return
        try:
            member, relation = self._check_ready()  # 1. config, install, address, peers
        except status.NotReady as wait:
            self._out.status = wait.status
            return
        peers = Peers(self, relation, self._out.notes)
        request = peers.publish_unit(member, dns_hostname(self.host.hostname))  # 2.
        self._lead(member, peers)  # 3.
        try:
            self._run_member(member, peers, request)  # 4.
        except (EtcdError, HostError) as error:
            self._out.status = status.failed(error)
        self._lead(member, peers)  # 5. membership as etcd now sees it
        self._serve_clients(member, peers)  # 6.
        membership.settle(member, peers.app_data(), bool(peers.own_member_id))  # 7.
        self._record_status(member, peers)  # 8.

    def _check_ready(self) -> tuple[workload.Member, ops.Relation]:
        """Valid config, not departed, etcd installed, an address, the peer relation."""
        try:
            settings.EtcdConfig.from_options(self.config)
        except ConfigError as error:
            raise status.NotReady(status.invalid_config(error)) from None
        if self.host.exists(literals.DEPARTED_MARKER):
            raise status.NotReady(status.LEFT)
        try:
            member = self._member()
        except (EtcdError, HostError, OSError) as error:
            raise status.NotReady(status.not_installed(error)) from None
        if (relation := self.model.get_relation(literals.PEER)) is None:
            raise status.NotReady(status.NO_PEER_RELATION)
        return member, relation

    def _lead(self, member: workload.Member, peers: Peers) -> None:
        """The leader: CA, member certificates and the membership etcd has (changed if due)."""
        ca = relations.cluster_ca(self) if self.unit.is_leader() else None
        if ca is not None and (blocked := peers.publish_cluster(ca, member)):
            self._out.status = ops.BlockedStatus(blocked)

    def _run_member(self, member: workload.Member, peers: Peers, request: KeyAndRequest) -> None:
        """Install the certificates, set stale data aside, start etcd, promote this member."""
        app, cert = peers.app_data(), peers.member_certificate(request)
        if app is None or cert is None:
            self._out.status = status.NO_CA if app is None else status.NO_CERTIFICATE
            return
        member.install_certificates(app.ca_cert, cert)
        if membership.retire_stale(member, app):
            peers.publish_member_id(None)
        if not membership.start_member(member, app):
            self._out.status = status.waiting_to_be_added(len(app.members))
        elif member.binaries.live and peers.own_member_id is None:
            endpoints = peers.client_urls(member) or [member.client_url]
            if not member.promote_self(endpoints, wait=literals.PROMOTE_WAIT):
                self._out.status = status.LEARNER
            elif (own := member.own_id()) is not None:
                peers.publish_member_id(f"{own:x}")

    def _serve_clients(self, member: workload.Member, peers: Peers) -> None:
        """The leader: client URLs, the CA and client certificates on every db relation."""
        db = self.model.relations.get(literals.DB, []) if self.unit.is_leader() else []
        if not db or (ca := relations.cluster_ca(self)) is None:
            return
        view = self._out.view(member, functools.partial(peers.endpoints, member))
        urls = view.healthy_client_urls() if view.live else peers.recorded_client_urls()
        if urls:
            relations.serve_clients(db, self.app, ca, urls, self._out.notes)

    def _leave(self) -> None:
        """Remove this member before it stops, unless that loses quorum; no relation data."""
        if self.host.exists(literals.DEPARTED_MARKER):
            self._out.status = status.LEFT
            return
        try:
            member = self._member(install=False)
        except Exception as error:
            logger.warning("leaving without touching etcd: %s", error)
            self._out.status = ops.MaintenanceStatus("leaving")
            return
        relation = self.model.get_relation(literals.PEER)
        peers = Peers(self, relation, self._out.notes) if relation else None
        blocker = membership.leave(member, peers.client_urls(member) if peers else [])
        self._out.status = status.not_leaving(blocker) if blocker else status.LEFT

    def _record_status(self, member: workload.Member, peers: Peers) -> None:
        """Conclude the status; remember it and what the cheap update-status needs to check."""
        endpoints = functools.partial(peers.endpoints, member)
        reached = self._out.conclude(member, self.host, peers.member_count, endpoints)
        facts: dict[str, Any] = {"service": literals.SERVICE, "live": member.binaries.live}
        if member.binaries.live:  # so that it need not read relation data
            app = peers.app_data()
            facts.update(endpoints=endpoints(), members=sorted(app.members) if app else [])
        self.record_reconciled(reached, facts=facts)

    def assess_status(self) -> ops.StatusBase | None:
        """The status this dispatch's reconcile (or leave) reached; None when none ran."""
        return self._out.status

    def reconcile_inputs(self) -> dict[str, Any]:
        """Besides config, leadership and relation data, a reconcile reads address and hostname."""
        return {
            "address": binding_address(self.model, literals.PEER),
            "bind": binding_address(self.model, literals.PEER, "bind"),
            "hostname": dns_hostname(self.host.hostname),
        }

    def still_healthy(self, record: ReconcileRecord) -> bool:
        """This member runs as the last reconcile left it (live: the cluster as recorded)."""
        service, facts = record.facts.get("service"), record.facts
        if not isinstance(service, str) or not self.host.services.is_running(service):
            return False
        gone = self.host.exists(literals.DEPARTED_MARKER) or self._leaving()
        if gone or self.model.get_relation(literals.PEER) is None:
            return False
        if facts.get("live") is False:
            return True
        endpoints, expected = facts.get("endpoints"), facts.get("members")
        if not isinstance(endpoints, list) or not isinstance(expected, list):
            return False
        member = self._member(install=False)
        if not member.binaries.live:
            return False  # it was live at the last reconcile: look again in full
        view = self._out.view(member, lambda: [str(e) for e in endpoints])
        return status.still_settled(member, view, expected, record.status)

    def _act(self, event: ops.ActionEvent) -> None:
        """Every action (kaji_etcd.actions): each does its own job and nothing else."""
        relation = self.model.get_relation(literals.PEER)
        peers = Peers(self, relation, status.Notes()) if relation else None
        find = functools.partial(self._member, install=False)
        leader, leaving = self.unit.is_leader(), self._leaving()
        actions.run(event, actions.Context(leader, leaving, find, peers, self.host, self.model))


if __name__ == "__main__":  # pragma: nocover
    ops.main(EtcdCharm)

#!/usr/bin/env python3
"""Charm entry point for kaji-control-plane: wiring only; the workload is in kaji_control_plane."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ops
from kaji_control_plane import literals, status
from kaji_control_plane.literals import KUBE_CONTROL, PEER, RECONCILED_FILE
from kaji_control_plane.status import Halt

from kaji.config import ConfigError
from kaji.host import host_from_environment
from kaji.juju import attached_resource, binding_address, ingress_addresses
from kaji.lazy import lazy_import
from kaji.reconciler import ReconcileRecord, ReconcilingCharm

if TYPE_CHECKING:
    from kaji_control_plane import (
        actions,
        binaries,
        cluster_setup,
        config,
        files,
        pki,
        relations,
        services,
    )

    from kaji import kubernetes as k8s
    from kaji.interfaces import control_plane_peers as peers

    ControlPlaneConfig = config.ControlPlaneConfig
    PeerApp = peers.ControlPlanePeerApp | None
else:  # a settled unit's update-status needs none of these (see docs/performance.md)
    actions = lazy_import("kaji_control_plane.actions")
    binaries = lazy_import("kaji_control_plane.binaries")
    cluster_setup = lazy_import("kaji_control_plane.cluster_setup")
    config = lazy_import("kaji_control_plane.config")
    files = lazy_import("kaji_control_plane.files")
    pki = lazy_import("kaji_control_plane.pki")
    relations = lazy_import("kaji_control_plane.relations")
    services = lazy_import("kaji_control_plane.services")
    k8s = lazy_import("kaji.kubernetes")


class ControlPlaneCharm(ReconcilingCharm):
    """kaji-control-plane: kube-apiserver, controller-manager, scheduler and the cluster CA."""

    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.get_kubeconfig_action, self._on_get_kubeconfig)
        framework.observe(self.on.restart_action, self._on_restart)
        for endpoint in self.meta.relations:
            framework.observe(self.on[endpoint].relation_departed, self._on_departure)
            framework.observe(self.on[endpoint].relation_broken, self._on_departure)
        self._stored.set_default(leaving=False)
        self.host = host_from_environment()
        self._status: ops.StatusBase | None = None
        self._notes = status.Notes()
        self._pending = False
        self.remember_reconciles(
            self.host, RECONCILED_FILE, max_age=literals.FULL_RECONCILE_INTERVAL
        )

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Every base event but departed and broken, which first ask who is leaving."""
        return [*self.lifecycle_events(), *self.relation_events(departures=False)]

    # -- leaving (Juju keeps a unit being removed as leader through its own departed, broken,
    # stop and remove hooks, its view of the remote units shrinking: see README, "Leaving")

    def _on_departure(self, event: ops.RelationDepartedEvent | ops.RelationBrokenEvent) -> None:
        if isinstance(event, ops.RelationBrokenEvent):  # the peer relation breaks only when
            leaving = event.relation.name == PEER  # this unit goes
        else:
            leaving = event.departing_unit == self.unit
        if leaving:
            self._leave()
        else:
            self.reconcile()

    def _leave(self) -> None:
        """This unit is being removed: from now on it changes no relation data at all."""
        self._stored.leaving = True
        self.host.remove_file(RECONCILED_FILE)  # no update-status reports a status from before
        self._status = status.LEAVING

    def _addresses(self) -> tuple[str | None, list[str]]:
        """The unit's primary address (kube-control binding) and every address it has."""
        found = ingress_addresses(self.model, KUBE_CONTROL) + ingress_addresses(self.model, PEER)
        return (found[0] if found else None), sorted(set(found))

    def _bind_address(self, fallback: str) -> str:
        """The machine's own address on kube-control (a sandbox's API server listens there)."""
        return binding_address(self.model, KUBE_CONTROL, "bind") or fallback

    # -- update-status (kaji.reconciler's record) ----------------------------------------------

    def reconcile_inputs(self) -> dict[str, Any]:
        """Besides config and relation data: the addresses and the hostname.

        Not the public address: unit-get costs a call, and Juju runs config-changed when a
        machine's addresses change, which reconciles in full.
        """
        address, found = self._addresses()
        bind, hostname = self._bind_address(address or ""), self.host.hostname
        return {"address": address, "addresses": found, "bind": bind, "hostname": hostname}

    def still_healthy(self, record: ReconcileRecord) -> bool:
        """Every recorded service still runs and nothing was left pending (it is retried)."""
        services_ = record.facts.get("services")
        if record.facts.get("pending") or not isinstance(services_, list) or not services_:
            return False
        return all(self.host.services.is_running(str(name)) for name in services_)

    def assess_status(self) -> ops.StatusBase | None:
        """The status this dispatch's reconcile reached; None when none ran (read-only)."""
        return self._status

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Validate everything, then make the machine and the relations match; record it."""
        self._notes, self._pending = status.Notes(), False
        if self._stored.leaving:
            self._status = status.LEAVING
            return
        try:
            self._status = self._notes.added_to(self._reconcile())
        except Halt as stop:
            self._status = self._notes.added_to(stop.status)
            if not stop.reached_machine:
                return
        pems = relations.certificates_in_care(self, self.host)
        facts: dict[str, Any] = {"services": list(literals.SERVICES)}
        if self._pending:
            facts["pending"] = True  # not settled: update-status reconciles until it is done
        self.record_reconciled(self._status, recheck_after=pki.earliest_renewal(pems), facts=facts)

    def _reconcile(self) -> ops.StatusBase:
        """The steps; a step that can go no further raises Halt with the status.

        1. load the config, checked against cni's pod network (invalid: block, change nothing);
        2. find the unit's addresses and node name;
        3. install the Kubernetes binaries;
        4. write the shared keys and files (the leader creates the app secrets once);
        5. publish this unit's CSRs; the leader signs every unit's; install this unit's;
        6. exchange the client certificate and the member URLs with etcd;
        7. publish the service network and the node name to cni;
        8. publish on kube-control (leader: sign nodes, keep departed workers' Nodes to delete);
        9. write the kubeconfigs, ensure the services, open the API port;
        10. set up the cluster (leader: RBAC bindings, CoreDNS, deleting departed Nodes);
        11. word the status.
        """
        settings, pod_cidr, cni_wait = self._load_config()
        address, addresses, hostname = self._find_identity()
        installed = self._install_binaries(settings)
        keys = self._write_shared_files(settings)
        exchange = relations.exchange_peer_certificates(
            self, self.host, settings, keys, hostname, addresses, self._notes
        )
        etcd_urls, etcd_wait = relations.exchange_etcd(self, self.host)
        relations.publish_cni(self, settings, hostname)
        api_endpoint = k8s.api_url(address)
        peer_app = relations.publish_kube_control(
            self, settings, keys, api_endpoint, exchange, self._notes
        )
        if etcd_wait:
            return ops.WaitingStatus(etcd_wait)
        if exchange.missing:
            return status.missing_certificates(exchange.missing)
        files.write_kubeconfigs(self.host, api_endpoint, keys.shared.ca_cert, exchange.requests)
        self.unit.set_ports(k8s.APISERVER_PORT)
        bind = self._bind_address(address) if self.host.is_sandbox else "0.0.0.0"  # noqa: S104
        place = services.Placement(address, bind, self.host.loopback_address, installed)
        services.run_services(self.host, settings, place, etcd_urls, pod_cidr)
        pending = self._set_up_cluster(settings, installed["kubectl"], peer_app)
        if not pod_cidr:
            return ops.WaitingStatus(cni_wait)
        if pending is not None:
            return ops.WaitingStatus(pending)
        return self._word_status(api_endpoint)

    def _load_config(self) -> tuple[ControlPlaneConfig, str | None, str]:
        pod_cidr, cni_wait = relations.read_pod_cidr(self)
        try:
            settings = config.ControlPlaneConfig.from_options(self.config)
            if pod_cidr:
                settings.check_pod_cidr(pod_cidr)
        except ConfigError as exc:
            raise Halt(status.invalid_config(exc), reached_machine=False) from None
        return settings, pod_cidr, cni_wait

    def _find_identity(self) -> tuple[str, list[str], str]:
        address, addresses = self._addresses()
        if address is None:
            raise Halt(status.NO_ADDRESS, reached_machine=False)
        try:
            hostname = k8s.node_name(self.host.hostname)
        except ValueError as exc:
            raise Halt(status.bad_hostname(exc), reached_machine=False) from None
        return address, addresses, hostname

    def _install_binaries(self, settings: ControlPlaneConfig) -> dict[str, str]:
        resource = attached_resource(self.model, literals.KUBERNETES_RESOURCE)  # not in a sandbox
        try:
            return binaries.install(self.host, settings, resource)
        except binaries.BinaryError as exc:
            raise Halt(status.no_binaries(settings.version, exc)) from None

    def _write_shared_files(self, settings: ControlPlaneConfig) -> relations.Keys:
        keys = relations.load_keys(self)
        if keys is None:
            raise Halt(status.NO_CLUSTER_CA)
        files.write_shared_files(self.host, keys.shared)
        files.write_audit_policy(self.host, settings)
        return keys

    def _set_up_cluster(
        self, settings: ControlPlaneConfig, kubectl: str, app: PeerApp
    ) -> str | None:
        departed = app.departed_nodes if app is not None else ()
        done = cluster_setup.set_up_cluster(
            self.host, settings, kubectl, leader=self.unit.is_leader(), departed=departed
        )
        if app is not None and done.departed_left != departed:
            relations.keep_departed(self, app, done.departed_left)
        self._pending = done.pending is not None
        return done.pending

    def _word_status(self, api_endpoint: str) -> ops.StatusBase:
        count = 1 + len(getattr(self.model.get_relation(PEER), "units", ()))
        recorded, leader = not self.host.services.runs_processes, self.unit.is_leader()
        expiry = pki.nearest_expiry(self.host)
        return status.active(api_endpoint, count, recorded=recorded, leader=leader, expiry=expiry)

    def _on_get_kubeconfig(self, event: ops.ActionEvent) -> None:
        actions.get_kubeconfig(event, self.host, self.config, self._addresses()[0])

    def _on_restart(self, event: ops.ActionEvent) -> None:
        actions.restart(event, self.host)


if __name__ == "__main__":  # pragma: nocover
    ops.main(ControlPlaneCharm)

#!/usr/bin/env python3
"""Charm entry point for kaji-control-plane: thin; the workload lives in control_plane.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import ops

from kaji.host import host_from_environment
from kaji.interfaces import RelationDataError, update_databag
from kaji.operator import ReconcileRecord, ReconcilingCharm, app_secret_content, lazy_import

if TYPE_CHECKING:
    import control_plane as cp

    from kaji import kubernetes as k8s
    from kaji.certs import KeyAndRequest
    from kaji.host import Host
    from kaji.interfaces import cni as cni_if
    from kaji.interfaces import control_plane_peers as peers
    from kaji.interfaces import etcd as etcd_if
    from kaji.interfaces import kube_control as kc
else:  # a settled unit's update-status needs none of these (see docs/performance.md)
    cp = lazy_import("control_plane")
    k8s = lazy_import("kaji.kubernetes")
    cni_if = lazy_import("kaji.interfaces.cni")
    peers = lazy_import("kaji.interfaces.control_plane_peers")
    etcd_if = lazy_import("kaji.interfaces.etcd")
    kc = lazy_import("kaji.interfaces.kube_control")

logger = logging.getLogger(__name__)

PEER = "cluster"
#: The reconcile record (kaji.operator), in control_plane.STATE_DIR.
RECONCILED_FILE = "/var/lib/kaji/control-plane/reconciled.json"
#: A full reconcile runs at least this often even when nothing changed.
FULL_RECONCILE_INTERVAL = 6 * 3600


class ControlPlaneCharm(ReconcilingCharm):
    """kaji-control-plane: kube-apiserver, controller-manager, scheduler and the cluster CA."""

    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.get_kubeconfig_action, self._on_get_kubeconfig)
        framework.observe(self.on.restart_action, self._on_restart)
        for endpoint in self.meta.relations:
            framework.observe(self.on[endpoint].relation_departed, self._on_relation_departed)
            framework.observe(self.on[endpoint].relation_broken, self._on_relation_broken)
        self._host: Host | None = None
        self._status: ops.StatusBase | None = None
        self._notes: list[str] = []
        self._pending = False
        self._ca_content: dict[str, str] = {}
        self._fp_content: dict[str, str] = {}
        self._reached_machine = False
        self.remember_reconciles(self.host, RECONCILED_FILE, max_age=FULL_RECONCILE_INTERVAL)

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Every base event but departed and broken, which first ask who is leaving."""
        own = {
            f"{endpoint.replace('-', '_')}_relation_{kind}"
            for endpoint in self.meta.relations
            for kind in ("departed", "broken")
        }
        return [e for e in super().reconcile_events() if e.event_kind not in own]

    # ------------------------------------------------------------------------- leaving

    def _on_relation_departed(self, event: ops.RelationDepartedEvent) -> None:
        # Juju keeps a unit that is being removed as leader through its own departed, broken,
        # stop and remove hooks, and in each departed hook its view of the remote units
        # shrinks: it must not take that view for the cluster's (see README, "Leaving").
        if event.departing_unit == self.unit:
            self._leave()
            return
        self.reconcile()

    def _on_relation_broken(self, event: ops.RelationBrokenEvent) -> None:
        if event.relation.name == PEER:  # the peer relation breaks only when this unit goes
            self._leave()
            return
        self.reconcile()

    def _leaving(self) -> bool:
        self._stored.set_default(leaving=False)
        return bool(self._stored.leaving)

    def _leave(self) -> None:
        """This unit is being removed: from now on it changes no relation data at all."""
        self._stored.set_default(leaving=False)
        self._stored.leaving = True
        # Forget the reconcile record, so no update-status reports a status from before.
        self.host.remove_file(RECONCILED_FILE)
        self._status = _LEAVING

    # ------------------------------------------------------------------------- facts

    @property
    def host(self) -> Host:
        """This unit's machine (a sandbox when KAJI_HOST_ROOT is set)."""
        if self._host is None:
            self._host = host_from_environment()
        return self._host

    def _hostname(self) -> str:
        return k8s.node_name(self.host.hostname)

    def _addresses(self) -> tuple[str | None, list[str]]:
        """The unit's primary address (kube-control binding) and every address it has."""
        primary: str | None = None
        found: list[str] = []
        for endpoint in ("kube-control", PEER):
            binding = self.model.get_binding(endpoint)
            if binding is None:
                continue
            try:
                network = binding.network
                ingress = [str(a) for a in network.ingress_addresses]
            except ops.ModelError:
                continue
            if primary is None and ingress:
                primary = ingress[0]
            found += ingress
        return primary, sorted(set(found))

    def _bind_address(self, fallback: str) -> str:
        """The address of the machine's own interface on the kube-control binding.

        In a sandbox the API server listens there (in production on every address): behind
        NAT or with spaces the ingress address others use is not one of the machine's own.
        """
        binding = self.model.get_binding("kube-control")
        try:
            address = binding.network.bind_address if binding is not None else None
        except ops.ModelError:
            address = None
        return str(address) if address is not None else fallback

    def _public_address(self) -> str | None:
        """The unit's public address as Juju reports it (``unit-get public-address``), or None.

        ops has no call for it; ``unit-get`` is the hook tool Juju puts on PATH in every hook
        and action. It answers the machine's public address (an IP, or on some clouds a DNS
        name), the one ``juju expose`` opens the API port on. Outside Juju (tests, the offline
        model) there is no such tool and the unit has no public address.
        """
        from kaji.host import CommandTimeoutError

        try:
            result = self.host.run(
                ["unit-get", "public-address", "--format=json"], check=False, timeout=10
            )
        except CommandTimeoutError:
            logger.warning("unit-get public-address timed out")
            return None
        if not result.ok:
            return None
        try:
            value = json.loads(result.stdout)
        except ValueError:
            value = result.stdout
        if not isinstance(value, str) or not value.strip():
            return None
        try:
            return peers.check_public_address("public-address", value.strip().lower())
        except RelationDataError as exc:
            logger.warning("ignoring the public address Juju reports: %s", exc)
            return None

    def _control_plane_count(self) -> int:
        relation = self.model.get_relation(PEER)
        return 1 + (len(relation.units) if relation else 0)

    # ------------------------------------------------------------------------- reconcile

    def reconcile(self) -> None:
        """Validate everything, then make the machine and the relations match."""
        self._reached_machine = False
        self._notes, self._pending = [], False
        if self._leaving():
            self._status = _LEAVING
            return
        self._status = self._reconcile()
        if not self._reached_machine:
            return  # validation stopped it: nothing on the machine changes, not even the record
        renew_at = _earliest_renewal(self._certificates_in_care())
        facts: dict[str, Any] = {"services": list(cp.SERVICES)}
        if self._pending:
            facts["pending"] = True  # not settled: update-status reconciles until it is done
        self.record_reconciled(self._status, recheck_after=renew_at, facts=facts)

    # ------------------------------------------------------------------------- update-status

    def reconcile_inputs(self) -> dict[str, Any]:
        """Besides config and relation data, a reconcile reads addresses and the hostname.

        The public address is not here: reading it costs a hook tool call, and Juju runs
        config-changed when a machine's addresses change, which reconciles in full.
        """
        address, addresses = self._addresses()
        return {
            "address": address,
            "addresses": addresses,
            "bind": self._bind_address(address or ""),
            "hostname": self.host.hostname,
        }

    def still_healthy(self, record: ReconcileRecord) -> bool:
        """Every service still runs and nothing was left pending (renewal: ``recheck_after``).

        The service names come from the record, so this path never loads ``control_plane``.
        A record of a reconcile that left cluster setup or a node deletion pending is never
        healthy: every update-status retries it.
        """
        if record.facts.get("pending"):
            return False
        services = record.facts.get("services")
        if not isinstance(services, list) or not services:
            return False
        return all(self.host.services.is_running(str(name)) for name in services)

    def _certificates_in_care(self) -> list[str]:
        """The certificates a reconcile renews: this unit's, and (leader) those it signed."""
        pems = [
            self.host.read_text(f"{cp.PKI_DIR}/{purpose}.crt") or "" for purpose in peers.PURPOSES
        ]
        pems.append(self.host.read_text(f"{cp.ETCD_PKI_DIR}/client.crt") or "")
        if not self.unit.is_leader():
            return [p for p in pems if p]
        app, _ = self._read_peer_app()
        for by_purpose in app.certificates.values() if app else ():
            pems += by_purpose.values()
        for relation in self.model.relations.get("kube-control", []):
            try:
                provider = kc.read_provider_app(relation.data[self.app])
            except RelationDataError:
                provider = None
            pems += provider.certificates.values() if provider else ()
        return [p for p in pems if p]

    def assess_status(self) -> ops.StatusBase | None:
        """The status this dispatch's reconcile reached; None when none ran (read-only)."""
        return self._status

    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    def _with_notes(self, status: ops.StatusBase) -> ops.StatusBase:
        """``status`` with what was refused or ignored appended (whose data, which key)."""
        if not self._notes:
            return status
        return type(status)(f"{status.message}; {'; '.join(self._notes)}")

    def _reconcile(self) -> ops.StatusBase:
        # 1. Validate: config, and the pod network against the service network.
        pod_cidr, cni_wait = self._pod_cidr()
        try:
            settings = cp.parse_settings(dict(self.config))
            if pod_cidr:
                cp.check_pod_cidr(settings, pod_cidr)
        except cp.ConfigError as exc:
            return ops.BlockedStatus(f"{exc.option}: {exc.reason}")
        address, addresses = self._addresses()
        if address is None:
            return ops.WaitingStatus("waiting for a network address")
        try:
            hostname = self._hostname()
        except ValueError as exc:
            return ops.BlockedStatus(f"hostname is not a valid node name: {exc}")
        host = self.host
        self._reached_machine = True

        # 2. Binaries.
        try:
            binaries = self._binaries(host, settings)
        except cp.BinaryError as exc:
            return ops.BlockedStatus(f"cannot install Kubernetes {settings.version}: {exc}")

        # 3. Shared keys from the app-owned secrets (the leader creates them once).
        keys = self._shared_keys()
        if keys is None:
            return ops.WaitingStatus("waiting for the leader to create the cluster CA")
        cp.write_shared_files(host, keys)
        cp.write_audit_policy(host, settings)

        # 4. This unit's keys and CSRs; the leader signs every unit's.
        public = self._public_address()
        requests = cp.ensure_requests(host, hostname, addresses, settings, public)
        own = peers.ControlPlanePeerUnit(
            hostname=hostname,
            addresses=tuple(addresses),
            csrs={purpose: r.csr_pem for purpose, r in requests.items()},
            public_address=public,
        )
        peer_relation = self.model.get_relation(PEER)
        if peer_relation is not None:
            update_databag(peer_relation.data[self.unit], own.to_databag())
        existing, peer_problem = self._read_peer_app()
        leader = self.unit.is_leader()
        peer_units = self._peer_units(own)
        peer_app: peers.ControlPlanePeerApp | None = None
        if leader:
            peer_app = self._sign_peers(settings, keys, peer_units, existing)
            certificates = peer_app.certificates_for(self.unit.name)
        else:
            certificates = existing.certificates_for(self.unit.name) if existing else {}
            if peer_problem:
                self._note(f"ignoring the leader's {peer_problem}")
        missing = self._install_own_certificates(host, requests, certificates, keys)

        # 5. etcd: our CSR out, our client certificate and the member URLs in.
        etcd_urls, etcd_wait = self._etcd(host)

        # 6. cni: service CIDR and node name out.
        self._publish_cni(settings, hostname)

        # 7. kube-control: our endpoint out; the leader publishes the cluster and signs nodes;
        # the Node objects of departed workers are kept in the peer data until deleted.
        api_endpoint = k8s.api_url(address)
        departed = self._kube_control(
            settings,
            keys,
            api_endpoint,
            {data.hostname for data in peer_units.values()},
            peer_app.departed_nodes if peer_app is not None else (),
        )
        if peer_app is not None:
            peer_app = dataclasses.replace(peer_app, departed_nodes=departed)
            self._publish_peer_app(peer_app)

        if etcd_wait:
            return self._with_notes(ops.WaitingStatus(etcd_wait))
        if missing:
            return self._with_notes(
                ops.WaitingStatus(
                    f"waiting for certificates from the leader: {', '.join(missing)}"
                )
            )

        # 8. Services, and the API port (opened to clients by `juju expose`).
        cp.write_kubeconfigs(host, api_endpoint, keys.ca_cert, requests)
        place = cp.Placement(
            address=address,
            bind_address=self._bind_address(address) if host.is_sandbox else "0.0.0.0",  # noqa: S104
            loopback=host.loopback_address,
            binaries=binaries,
        )
        specs = cp.service_specs(host, settings, place, etcd_urls, pod_cidr)
        self.unit.set_ports(k8s.APISERVER_PORT)
        cp.ensure_services(host, specs)

        # 9. Cluster setup (leader): RBAC bindings, CoreDNS, deleting departed workers' Nodes;
        # retried by every update-status until done.
        pending = self._cluster_setup(host, settings, binaries["kubectl"], peer_app)
        self._pending = pending is not None

        if not pod_cidr:
            return self._with_notes(ops.WaitingStatus(cni_wait))
        if pending is not None:
            return self._with_notes(ops.WaitingStatus(pending))
        count = self._control_plane_count()
        notes = []
        if not host.services.runs_processes:
            notes.append(
                "services and cluster setup recorded only (sandbox)"
                if leader
                else "services recorded only (sandbox)"
            )
        expiry = self._nearest_expiry(host)
        if expiry is not None:
            notes.append(expiry)
        suffix = f"; {', '.join(notes)}" if notes else ""
        plural = "s" if count != 1 else ""
        return self._with_notes(
            ops.ActiveStatus(f"API {api_endpoint} ({count} control plane{plural}){suffix}")
        )

    # ------------------------------------------------------------------------- steps

    def _binaries(self, host: Host, settings: cp.Settings) -> dict[str, str]:
        if host.is_sandbox:
            return cp.locate_binaries(host)
        from kaji.host import BinaryInstallError

        resource: str | None = None
        try:
            resource = str(self.model.resources.fetch("kubernetes"))
        except (ops.ModelError, NameError):
            resource = None
        if resource is not None and os.path.getsize(resource) == 0:
            resource = None  # an empty placeholder resource: download instead
        try:
            return cp.install_release(host, settings, resource, k8s.machine_arch(), cp.fetch_text)
        except BinaryInstallError as exc:
            raise cp.BinaryError(str(exc)) from exc

    def _shared_keys(self) -> cp.SharedKeys | None:
        ca = app_secret_content(self, cp.CA_SECRET, lambda: cp.new_ca_content("kubernetes-ca"))
        fp = app_secret_content(
            self, cp.FRONT_PROXY_CA_SECRET, lambda: cp.new_ca_content("kubernetes-front-proxy-ca")
        )
        sa = app_secret_content(self, cp.SERVICE_ACCOUNT_SECRET, cp.new_service_account_content)
        enc = app_secret_content(self, cp.ENCRYPTION_SECRET, cp.new_encryption_content)
        if ca is None or fp is None or sa is None or enc is None:
            return None
        self._ca_content, self._fp_content = ca, fp
        return cp.SharedKeys(
            ca_cert=ca["cert"],
            front_proxy_ca_cert=fp["cert"],
            service_account_key=sa["key"],
            service_account_pub=sa["pub"],
            encryption_key=enc["key"],
        )

    def _read_peer_app(self) -> tuple[peers.ControlPlanePeerApp | None, str | None]:
        """The leader's peer application data, and what is wrong with it when malformed."""
        relation = self.model.get_relation(PEER)
        if relation is None:
            return None, None
        try:
            return peers.read_peer_app(relation.data[self.app]), None
        except RelationDataError as exc:
            logger.warning("ignoring malformed peer application data: %s", exc)
            return None, f"peer data: {exc.key}: {exc.reason[:120]}"

    def _peer_units(
        self, own: peers.ControlPlanePeerUnit
    ) -> dict[str, peers.ControlPlanePeerUnit]:
        """Leader: every control-plane unit's peer data, this unit's included (others: own only).

        Malformed peer data is logged, noted in the status (whose, which key) and left out
        until it is valid.
        """
        units = {self.unit.name: own}
        relation = self.model.get_relation(PEER)
        if relation is None or not self.unit.is_leader():
            return units
        for unit in relation.units:
            try:
                data = peers.read_peer_unit(relation.data[unit])
            except RelationDataError as exc:
                logger.warning("ignoring malformed peer data of %s: %s", unit.name, exc)
                self._note(f"ignoring {unit.name}'s peer data: {exc.key}: {exc.reason[:100]}")
                continue
            if data is not None:
                units[unit.name] = data
        return units

    def _sign_peers(
        self,
        settings: cp.Settings,
        keys: cp.SharedKeys,
        units: Mapping[str, peers.ControlPlanePeerUnit],
        existing: peers.ControlPlanePeerApp | None,
    ) -> peers.ControlPlanePeerApp:
        """Leader: (re)sign every unit's CSRs; the peer application data to publish."""
        signing = cp.sign_peer_certificates(
            units,
            cp.ca_from_content(self._ca_content),
            cp.ca_from_content(self._fp_content),
            settings,
            existing.certificates if existing else {},
        )
        for unit, (purpose, reason) in sorted(signing.refused.items()):
            self._note(f"refusing {unit}'s {purpose} certificate request: {_brief(reason)}")
        return peers.ControlPlanePeerApp(
            ca_cert=keys.ca_cert,
            front_proxy_ca_cert=keys.front_proxy_ca_cert,
            certificates=signing.certificates,
            departed_nodes=existing.departed_nodes if existing else (),
        )

    def _publish_peer_app(self, app: peers.ControlPlanePeerApp) -> None:
        relation = self.model.get_relation(PEER)
        if relation is not None:
            update_databag(relation.data[self.app], app.to_databag())

    def _install_own_certificates(
        self,
        host: Host,
        requests: Mapping[str, KeyAndRequest],
        certificates: Mapping[str, str],
        keys: cp.SharedKeys,
    ) -> list[str]:
        """Install every usable certificate; return the purposes still waiting."""
        missing = []
        for purpose, request in requests.items():
            ca = (
                keys.front_proxy_ca_cert if purpose in peers.FRONT_PROXY_PURPOSES else keys.ca_cert
            )
            profile = cp.profile_for(purpose).value
            if not cp.install_certificate(host, request, certificates.get(purpose), ca, profile):
                missing.append(purpose)
        return missing

    def _etcd(self, host: Host) -> tuple[list[str], str | None]:
        """Send our etcd CSR; install what etcd sent. Returns (member URLs, waiting message)."""
        relation = self.model.get_relation("etcd")
        if relation is None:
            return [], "waiting for etcd: relate to etcd:db"
        request = cp.ensure_etcd_request(host, self.unit.name)
        update_databag(
            relation.data[self.unit], etcd_if.EtcdRequirerUnit(request.csr_pem).to_databag()
        )
        provider: etcd_if.EtcdProviderApp | None = None
        sender = relation.app.name if relation.app is not None else "etcd"
        if relation.app is not None:
            try:
                provider = etcd_if.read_provider_app(relation.data[relation.app])
            except RelationDataError as exc:
                logger.warning("ignoring malformed etcd data from %s: %s", sender, exc)
                return [], (
                    f"waiting for etcd: {sender}'s application data is invalid:"
                    f" {exc.key}: {exc.reason[:100]}"
                )
        if provider is None:
            return [], "waiting for etcd: member URLs and CA"
        cp.write_etcd_files(host, provider.ca_cert)
        cert = provider.certificate_for(self.unit.name)
        if not cp.install_certificate(host, request, cert, provider.ca_cert, "client"):
            if cert is None:
                return [], "waiting for etcd: client certificate"
            return [], (
                f"waiting for etcd: the client certificate {sender} sent"
                f" (certificates[{self.unit.name}]) does not match this unit's request"
            )
        return list(provider.client_urls), None

    def _pod_cidr(self) -> tuple[str | None, str]:
        """The pod network the cni reports, and the waiting message while there is none."""
        relation = self.model.get_relation("cni")
        wait = "waiting for cni: the pod network (cluster CIDR)"
        if relation is None:
            return None, wait
        for unit in sorted(relation.units, key=lambda u: u.name):
            try:
                data = cni_if.read_cni_unit(relation.data[unit])
            except RelationDataError as exc:
                logger.warning("ignoring malformed cni data of %s: %s", unit.name, exc)
                wait = (
                    f"waiting for cni: {unit.name}'s data is invalid:"
                    f" {exc.key}: {exc.reason[:100]}"
                )
                continue
            if data is not None:
                return data.cluster_cidr, wait
        return None, wait

    def _publish_cni(self, settings: cp.Settings, hostname: str) -> None:
        relation = self.model.get_relation("cni")
        if relation is not None:
            data = cni_if.CniPrincipalUnit(service_cidr=settings.service_cidr, node_name=hostname)
            update_databag(relation.data[self.unit], data.to_databag())

    def _kube_control(
        self,
        settings: cp.Settings,
        keys: cp.SharedKeys,
        api_endpoint: str,
        control_plane_hostnames: set[str],
        pending_deletions: Iterable[str],
    ) -> tuple[str, ...]:
        """Publish on kube-control; leader: sign nodes, return the Nodes left to delete.

        Those are the pending deletions (from the peer data) plus the nodes of workers that
        held a certificate and are gone, less every node name a present worker claims.
        """
        relations = self.model.relations.get("kube-control", [])
        own = kc.KubeControlProviderUnit(api_endpoint=api_endpoint).to_databag()
        for relation in relations:
            update_databag(relation.data[self.unit], own)
        if not self.unit.is_leader():
            return ()
        departed = set(pending_deletions)
        if not relations:
            return tuple(sorted(departed))
        workers: dict[str, Mapping[str, str]] = {}
        existing: dict[str, str] = {}
        for relation in relations:
            for unit in relation.units:
                workers[unit.name] = relation.data[unit]
            try:
                current = kc.read_provider_app(relation.data[self.app])
            except RelationDataError as exc:
                logger.warning("ignoring malformed kube-control application data: %s", exc)
                current = None
            if current is not None:
                existing.update(current.certificates)
        signing = cp.sign_node_certificates(
            workers,
            cp.ca_from_content(self._ca_content),
            existing,
            cp.reserved_node_names(settings, control_plane_hostnames),
        )
        for unit_name, reason in sorted(signing.refused.items()):
            self._note(f"refusing {unit_name}'s node certificate request: {_brief(reason)}")
        for unit_name, cert in existing.items():
            if unit_name not in workers and (name := cp.node_name_of_certificate(cert)):
                logger.info("worker %s departed: its Node %s is to be deleted", unit_name, name)
                departed.add(name)
        for relation in relations:
            names = {unit.name for unit in relation.units}
            app = kc.KubeControlProviderApp(
                ca_cert=keys.ca_cert,
                service_cidr=settings.service_cidr,
                dns_address=settings.dns_address,
                dns_domain=settings.dns_domain,
                kubernetes_version=str(settings.version),
                image_registry=settings.image_registry,
                certificates={u: c for u, c in signing.certificates.items() if u in names},
            )
            update_databag(relation.data[self.app], app.to_databag())
        return tuple(sorted(departed - signing.claimed))

    def _cluster_setup(
        self,
        host: Host,
        settings: cp.Settings,
        kubectl: str,
        peer_app: peers.ControlPlanePeerApp | None,
    ) -> str | None:
        """Render the manifests; the leader applies them and deletes departed workers' Nodes.

        Returns what is still pending and why, for the status (None: nothing is). Where the
        services are only recorded (a sandbox), nothing serves the API: the leader records
        the setup and the deletions as done, and the status says it is recorded only.
        """
        manifests = cp.render_manifests(settings)
        paths = cp.write_manifests(host, manifests)
        if not self.unit.is_leader():
            return None
        recorded = not host.services.runs_processes
        pending: list[str] = []
        reasons: list[str] = []
        digest = cp.manifests_digest(manifests)
        if cp.applied_digest(host) != digest and not recorded:
            reason = cp.apply_manifests(host, kubectl, paths, digest)
            if reason is not None:
                pending.append("apply the RBAC bindings and CoreDNS")
                reasons.append(reason)
        departed = peer_app.departed_nodes if peer_app is not None else ()
        if departed:
            if recorded:
                logger.info("recorded only (sandbox): deleting Nodes %s", ", ".join(departed))
                left: dict[str, str] = {}
            else:
                left = cp.delete_nodes(host, kubectl, departed)
            if peer_app is not None and tuple(sorted(left)) != departed:
                self._publish_peer_app(
                    dataclasses.replace(peer_app, departed_nodes=tuple(sorted(left)))
                )
            if left:
                pending.append(
                    f"delete the Node{'s' if len(left) > 1 else ''} of departed "
                    f"workers: {', '.join(sorted(left))}"
                )
                reasons += [r for r in left.values() if r not in reasons]
        if not pending:
            return None
        return f"waiting for the API to {' and '.join(pending)} ({reasons[0]})"

    def _nearest_expiry(self, host: Host) -> str | None:
        from kaji import pki

        days_left: list[int] = []
        for purpose in peers.PURPOSES:
            cert = host.read_text(f"{cp.PKI_DIR}/{purpose}.crt")
            if cert and pki.expires_within(cert, 30):
                info = pki.read_certificate(cert)
                from kaji import clock

                days_left.append((info.not_after - clock.now()).days)
        if not days_left:
            return None
        return f"a certificate expires in {max(min(days_left), 0)} days"

    # ------------------------------------------------------------------------- actions

    def _on_get_kubeconfig(self, event: ops.ActionEvent) -> None:
        """An admin kubeconfig; reads only (no file, relation or secret is written).

        The server is the ``loadbalancer-address`` when set, else the unit's public address
        when Juju reports one, else its own address: each is in the API certificate.
        """
        try:
            settings = cp.parse_settings(dict(self.config))
        except cp.ConfigError as exc:
            event.fail(f"invalid config: {exc}")
            return
        address, _ = self._addresses()
        endpoint = settings.loadbalancer_address or self._public_address() or address
        if endpoint is None:
            event.fail("this unit has no address yet")
            return
        try:
            kubeconfig = cp.admin_kubeconfig(self.host, k8s.api_url(endpoint))
        except FileNotFoundError as exc:
            event.fail(str(exc))
            return
        event.set_results({"kubeconfig": kubeconfig})

    def _on_restart(self, event: ops.ActionEvent) -> None:
        """Restart the three services as they are set up; nothing else changes."""
        if self.host.is_sandbox:
            cp.locate_binaries(self.host)
        restarted = cp.restart_recorded_services(self.host)
        if not restarted:
            event.fail("no control-plane service is set up on this unit yet")
            return
        event.set_results({"restarted": ",".join(restarted)})


#: The status of a unit that is being removed (set in its own departed/broken hooks).
_LEAVING = ops.MaintenanceStatus("leaving: relation data is left as it is for the next leader")


def _brief(reason: str) -> str:
    """A refusal reason short enough for a status: the detail in brackets is in the log."""
    return reason.split(" (", 1)[0][:160]


def _earliest_renewal(pems: Iterable[str]) -> int | None:
    """When (epoch seconds) the first of these certificates is due for renewal, or None.

    Due means under a third of its lifetime left (``kaji.pki.renewal_due``); an unreadable
    certificate is due now.
    """
    from kaji import pki

    due: list[float] = []
    for pem in pems:
        try:
            info = pki.read_certificate(pem)
        except pki.PKIError:
            due.append(0)  # due now (and stable: the record is not rewritten every hook)
            continue
        lifetime = info.not_after - info.not_before
        due.append((info.not_after - lifetime / 3).timestamp())
    return int(min(due)) if due else None


if __name__ == "__main__":  # pragma: nocover
    ops.main(ControlPlaneCharm)

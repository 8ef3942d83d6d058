#!/usr/bin/env python3
"""Charm entry point for kaji-control-plane: thin; the workload lives in control_plane.py."""

from __future__ import annotations

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

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.get_kubeconfig_action, self._on_get_kubeconfig)
        framework.observe(self.on.restart_action, self._on_restart)
        self._host: Host | None = None
        self._status: ops.StatusBase | None = None
        self._ca_content: dict[str, str] = {}
        self._fp_content: dict[str, str] = {}
        self._reached_machine = False
        self.remember_reconciles(self.host, RECONCILED_FILE, max_age=FULL_RECONCILE_INTERVAL)

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

    def _control_plane_count(self) -> int:
        relation = self.model.get_relation(PEER)
        return 1 + (len(relation.units) if relation else 0)

    # ------------------------------------------------------------------------- reconcile

    def reconcile(self) -> None:
        """Validate everything, then make the machine and the relations match."""
        self._reached_machine = False
        self._status = self._reconcile()
        if not self._reached_machine:
            return  # validation stopped it: nothing on the machine changes, not even the record
        renew_at = _earliest_renewal(self._certificates_in_care())
        self.record_reconciled(
            self._status, recheck_after=renew_at, facts={"services": list(cp.SERVICES)}
        )

    # ------------------------------------------------------------------------- update-status

    def reconcile_inputs(self) -> dict[str, Any]:
        """Besides config, leadership and relation data, a reconcile reads addresses, hostname."""
        address, addresses = self._addresses()
        return {"address": address, "addresses": addresses, "hostname": self.host.hostname}

    def still_healthy(self, record: ReconcileRecord) -> bool:
        """Every service still runs (certificate renewal: the record's ``recheck_after``).

        The service names come from the record, so this path never loads ``control_plane``.
        """
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
        relation = self.model.get_relation(PEER)
        try:
            app = peers.read_peer_app(relation.data[self.app]) if relation else None
        except RelationDataError:
            app = None
        for by_purpose in app.certificates.values() if app else ():
            pems += by_purpose.values()
        for relation in self.model.relations.get("kube-control", []):
            try:
                provider = kc.read_provider_app(relation.data[self.app])
            except RelationDataError:
                provider = None
            pems += provider.certificates.values() if provider else ()
        return [p for p in pems if p]

    def assess_status(self) -> ops.StatusBase:
        """The status the last reconcile reached (reconciling first if none ran this hook)."""
        if self._status is None:
            self.reconcile()
        assert self._status is not None
        return self._status

    def _reconcile(self) -> ops.StatusBase:
        # 1. Validate: config, and the pod network against the service network.
        try:
            settings = cp.parse_settings(dict(self.config))
            pod_cidr = self._pod_cidr()
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
        requests = cp.ensure_requests(host, hostname, addresses, settings)
        own = peers.ControlPlanePeerUnit(
            hostname=hostname,
            addresses=tuple(addresses),
            csrs={purpose: r.csr_pem for purpose, r in requests.items()},
        )
        peer_relation = self.model.get_relation(PEER)
        if peer_relation is not None:
            update_databag(peer_relation.data[self.unit], own.to_databag())
        peer_units = self._peer_units(own)
        certificates = self._peer_certificates(settings, keys, peer_units)
        missing = self._install_own_certificates(host, requests, certificates, keys)

        # 5. etcd: our CSR out, our client certificate and the member URLs in.
        etcd_urls, etcd_wait = self._etcd(host)

        # 6. cni: service CIDR and node name out.
        self._publish_cni(settings, hostname)

        # 7. kube-control: our endpoint out; the leader publishes the cluster and signs nodes.
        api_endpoint = k8s.api_url(address)
        self._kube_control(settings, keys, api_endpoint, {u.hostname for u in peer_units.values()})

        if etcd_wait:
            return ops.WaitingStatus(etcd_wait)
        if missing:
            return ops.WaitingStatus(
                f"waiting for certificates from the leader: {', '.join(missing)}"
            )

        # 8. Services.
        cp.write_kubeconfigs(host, api_endpoint, keys.ca_cert, requests)
        place = cp.Placement(
            address=address,
            bind_address=address if host.is_sandbox else "0.0.0.0",  # noqa: S104 - the API serves all
            loopback=host.loopback_address,
            binaries=binaries,
        )
        specs = cp.service_specs(host, settings, place, etcd_urls, pod_cidr)
        cp.ensure_services(host, specs)

        # 9. Cluster setup (leader): RBAC bindings and CoreDNS.
        setup_pending = self._cluster_setup(host, settings, binaries["kubectl"])

        if not pod_cidr:
            return ops.WaitingStatus("waiting for cni: the pod network (cluster CIDR)")
        count = self._control_plane_count()
        notes = []
        if not host.services.runs_processes:
            notes.append("services recorded only (sandbox)")
        if setup_pending:
            notes.append("cluster setup pending")
        expiry = self._nearest_expiry(host)
        if expiry is not None:
            notes.append(expiry)
        suffix = f"; {', '.join(notes)}" if notes else ""
        plural = "s" if count != 1 else ""
        return ops.ActiveStatus(f"API {api_endpoint} ({count} control plane{plural}){suffix}")

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

    def _peer_units(
        self, own: peers.ControlPlanePeerUnit
    ) -> dict[str, peers.ControlPlanePeerUnit]:
        """Leader: every control-plane unit's peer data, this unit's included (others: own only).

        Malformed peer data is logged and left out until it is valid.
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
                continue
            if data is not None:
                units[unit.name] = data
        return units

    def _peer_certificates(
        self,
        settings: cp.Settings,
        keys: cp.SharedKeys,
        units: Mapping[str, peers.ControlPlanePeerUnit],
    ) -> Mapping[str, str]:
        """This unit's certificates by purpose; the leader (re)signs everyone's first."""
        relation = self.model.get_relation(PEER)
        existing: peers.ControlPlanePeerApp | None = None
        if relation is not None:
            try:
                existing = peers.read_peer_app(relation.data[self.app])
            except RelationDataError as exc:
                logger.warning("ignoring malformed peer application data: %s", exc)
        if not self.unit.is_leader():
            return existing.certificates_for(self.unit.name) if existing else {}
        issued = cp.sign_peer_certificates(
            units,
            cp.ca_from_content(self._ca_content),
            cp.ca_from_content(self._fp_content),
            settings,
            existing.certificates if existing else {},
        )
        if relation is not None:
            app = peers.ControlPlanePeerApp(
                ca_cert=keys.ca_cert,
                front_proxy_ca_cert=keys.front_proxy_ca_cert,
                certificates=issued,
            )
            update_databag(relation.data[self.app], app.to_databag())
        return issued.get(self.unit.name, {})

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
        if relation.app is not None:
            try:
                provider = etcd_if.read_provider_app(relation.data[relation.app])
            except RelationDataError as exc:
                logger.warning("ignoring malformed etcd data: %s", exc)
        if provider is None:
            return [], "waiting for etcd: member URLs and CA"
        cp.write_etcd_files(host, provider.ca_cert)
        cert = provider.certificate_for(self.unit.name)
        if not cp.install_certificate(host, request, cert, provider.ca_cert, "client"):
            return [], "waiting for etcd: client certificate"
        return list(provider.client_urls), None

    def _pod_cidr(self) -> str | None:
        relation = self.model.get_relation("cni")
        if relation is None:
            return None
        for unit in relation.units:
            try:
                data = cni_if.read_cni_unit(relation.data[unit])
            except RelationDataError as exc:
                logger.warning("ignoring malformed cni data of %s: %s", unit.name, exc)
                continue
            if data is not None:
                return data.cluster_cidr
        return None

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
    ) -> None:
        relations = self.model.relations.get("kube-control", [])
        own = kc.KubeControlProviderUnit(api_endpoint=api_endpoint).to_databag()
        for relation in relations:
            update_databag(relation.data[self.unit], own)
        if not self.unit.is_leader() or not relations:
            return
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

    def _cluster_setup(self, host: Host, settings: cp.Settings, kubectl: str) -> bool:
        """Render the manifests; the leader applies them once the API answers.

        Returns whether the setup is still pending on this (leader) unit.
        """
        manifests = cp.render_manifests(settings)
        paths = cp.write_manifests(host, manifests)
        if not self.unit.is_leader():
            return False
        digest = cp.manifests_digest(manifests)
        if cp.applied_digest(host) == digest:
            return False
        if not host.services.runs_processes:
            return True  # nothing serves the API in a recording sandbox
        return not cp.apply_manifests(host, kubectl, paths, digest)

    def _nearest_expiry(self, host: Host) -> str | None:
        from kaji import pki

        days_left: list[int] = []
        for purpose in peers.PURPOSES:
            cert = host.read_text(f"{cp.PKI_DIR}/{purpose}.crt")
            if cert and pki.expires_within(cert, 30):
                info = pki.read_certificate(cert)
                from datetime import datetime, timezone

                days_left.append((info.not_after - datetime.now(timezone.utc)).days)
        if not days_left:
            return None
        return f"a certificate expires in {max(min(days_left), 0)} days"

    # ------------------------------------------------------------------------- actions

    def _on_get_kubeconfig(self, event: ops.ActionEvent) -> None:
        try:
            settings = cp.parse_settings(dict(self.config))
        except cp.ConfigError as exc:
            event.fail(f"invalid config: {exc}")
            return
        address, _ = self._addresses()
        endpoint = settings.loadbalancer_address or address
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
        if self.host.is_sandbox:
            cp.locate_binaries(self.host)
        restarted = cp.restart_recorded_services(self.host)
        if not restarted:
            event.fail("no control-plane service is set up on this unit yet")
            return
        event.set_results({"restarted": ",".join(restarted)})


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

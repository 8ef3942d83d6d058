#!/usr/bin/env python3
"""Charm entry point for kaji-worker: thin; the workload lives in src/kaji_worker."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ops

from kaji.operator import ReconcilingCharm

if TYPE_CHECKING:
    from kaji_worker.node import Node, Outcome, Waits

    from kaji.interfaces import RelationDataError
    from kaji.interfaces.cni import CniUnit
    from kaji.interfaces.kube_control import KubeControlProviderApp

logger = logging.getLogger(__name__)

KUBE_CONTROL = "kube-control"
CNI = "cni"


class WorkerCharm(ReconcilingCharm):
    """kaji-worker: a Kubernetes node with containerd, kubelet and kube-proxy."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.update_status, self._on_update_status)
        framework.observe(self.on.stop, self._on_leaving)
        framework.observe(self.on.remove, self._on_leaving)
        self._outcome: Outcome | None = None
        self._config_blocked = False
        self._leaving = False
        self._node: Node | None = None

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Every event of the base class but update-status, which has a fast path."""
        return [e for e in super().reconcile_events() if e.event_kind != "update_status"]

    # -- events ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make this machine the node the config and relations describe."""
        from kaji_worker.node import Node

        from kaji.host import host_from_environment

        self._node = None
        self._config_blocked = False
        try:
            self._outcome = self._reconcile()
        except Exception:
            Node(host_from_environment()).forget()
            raise
        if self._outcome.state == "blocked":
            logger.warning("%s", self._outcome.message)
        # Only a reconcile that reached the machine is remembered for update-status. Invalid
        # config or proxies change nothing at all: the record's inputs digest no longer
        # matches them, so update-status reconciles (and blocks) again.
        if self._node is not None:
            self._node.remember(self._outcome, self._inputs())
        elif not self._config_blocked:
            Node(host_from_environment()).forget()

    def _on_update_status(self, _: ops.EventBase) -> None:
        """Reuse the last outcome while it holds (services up, no deadline passed)."""
        from kaji_worker.node import Node

        from kaji.host import host_from_environment

        self._outcome = Node(host_from_environment()).recall(inputs=self._inputs())
        if self._outcome is None:
            self.reconcile()

    def _inputs(self) -> str:
        """Digest of the inputs no event announces to this unit: config and model proxies.

        (Juju passes changed proxy settings to the next hook without an event of their own;
        update-status then reconciles.)
        """
        import hashlib
        import json

        from kaji.host.proxy import juju_proxy_values

        data = {"config": dict(self.config), "proxies": juju_proxy_values()}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()

    def _on_leaving(self, _: ops.EventBase) -> None:
        from kaji_worker.node import Node

        from kaji.host import host_from_environment

        self._leaving = True
        Node(host_from_environment()).teardown()

    def assess_status(self) -> ops.StatusBase | None:
        """What this dispatch's reconcile reached; None (status unchanged) when none ran.

        Read-only: collect-status runs after every event, the ones the charm does not
        reconcile on included, and must change nothing.
        """
        if self._leaving:
            return ops.MaintenanceStatus("removing: node services stopped, files removed")
        if self._outcome is None:
            return None
        outcome = self._outcome
        if outcome.state == "active":
            message = outcome.message
            if outcome.recorded:
                message += f" (recorded, not running: {', '.join(outcome.recorded)})"
            return ops.ActiveStatus(message)
        return ops.StatusBase.from_name(outcome.state, outcome.message)

    # -- the picture -------------------------------------------------------------------------

    def _hostname(self) -> str:
        from kaji.host import host_from_environment

        return host_from_environment().hostname

    def _address(self) -> str | None:
        binding = self.model.get_binding(KUBE_CONTROL)
        address = binding.network.ingress_address if binding is not None else None
        return str(address) if address is not None else None

    def _resource(self, name: str) -> str | None:
        try:
            path = self.model.resources.fetch(name)
        except (ops.ModelError, NameError, RuntimeError):
            # Not attached (ModelError in Juju; ops.testing and the offline model may raise
            # the others for a resource they were not given).
            return None
        return str(path) if path.exists() and path.stat().st_size > 0 else None

    def _reconcile(self) -> Outcome:
        from kaji_worker.node import Node, NodeError, Outcome, Resources
        from kaji_worker.options import OptionError, parse_options

        from kaji import kubernetes
        from kaji.host import ProxyError, proxy_settings
        from kaji.interfaces import update_databag
        from kaji.interfaces.cni import CniPrincipalUnit
        from kaji.interfaces.kube_control import KubeControlRequirerUnit

        # 1. Everything is read and validated before the machine is touched.
        try:
            options = parse_options(dict(self.config))
            proxies = proxy_settings()
        except (OptionError, ProxyError) as exc:
            self._config_blocked = True
            return Outcome("blocked", str(exc))
        kube_rel = self.model.get_relation(KUBE_CONTROL)
        cni_rel = self.model.get_relation(CNI)
        control_plane, endpoints, waits = self._read_kube_control(kube_rel)
        cni, waits = self._read_cni(cni_rel, control_plane, waits)
        if control_plane is not None:
            try:
                options.check_version(kubernetes.check_version(control_plane.kubernetes_version))
            except OptionError as exc:
                self._config_blocked = True
                return Outcome("blocked", str(exc))
            except kubernetes.UnsupportedVersionError as exc:
                return Outcome(
                    "blocked", f"unusable 'kubernetes-version' from {waits.issuer}: {exc}"
                )
        hostname = self._hostname()
        try:
            node_name = kubernetes.node_name(hostname)
        except ValueError:
            return Outcome("blocked", f"hostname {hostname!r} is not a valid Kubernetes node name")
        address = self._address()
        if address is None:
            return Outcome("waiting", "waiting for a network address")

        # 2. The node identity, published for the control plane to sign.
        from kaji.host import host_from_environment

        node = Node(host_from_environment())
        request = node.ensure_identity(node_name, [address])
        if kube_rel is not None:
            mine = KubeControlRequirerUnit(node_name, (address,), request.csr_pem)
            update_databag(kube_rel.data[self.unit], mine.to_databag())
        if cni_rel is not None and control_plane is not None:
            principal = CniPrincipalUnit(control_plane.service_cidr, node_name)
            update_databag(cni_rel.data[self.unit], principal.to_databag())

        # 3. The machine.
        resources = Resources(self._resource("containerd"), self._resource("kubernetes-node"))
        try:
            outcome = node.reconcile(
                options,
                unit_name=self.unit.name,
                node_name=node_name,
                address=address,
                request=request,
                control_plane=control_plane,
                endpoints=endpoints,
                cni=cni,
                resources=resources,
                proxies=proxies,
                waits=waits,
            )
        except NodeError as exc:
            return Outcome("blocked", str(exc))
        finally:
            self._node = node
        if outcome.state == "waiting":
            if kube_rel is None:
                return Outcome("blocked", "needs a control plane: relate kube-control")
            if cni_rel is None and control_plane is not None and "CNI" in outcome.message:
                return Outcome("blocked", f"node {node_name}: needs a CNI: relate cni")
        return outcome

    # -- reading the relations (every bad value named with its sender and key) --------------

    def _read_kube_control(
        self, relation: ops.Relation | None
    ) -> tuple[KubeControlProviderApp | None, list[str], Waits]:
        """The control-plane leader's data, every unit's API endpoint, and how to word waits."""
        from kaji_worker.node import Waits

        from kaji.interfaces import RelationDataError
        from kaji.interfaces.kube_control import read_provider_app, read_provider_unit

        if relation is None or relation.app is None:
            return None, [], Waits()
        app = relation.app.name
        control_plane = None
        cluster = f"waiting for cluster data from {app}"
        try:
            control_plane = read_provider_app(relation.data[relation.app])
        except RelationDataError as exc:
            logger.error("ignoring %s's cluster data: %s", app, exc)
            cluster = f"waiting for valid cluster data: {_bad(app, exc)}"
        endpoints: set[str] = set()
        refused: list[str] = []
        for unit in sorted(relation.units, key=lambda u: u.name):
            try:
                data = read_provider_unit(relation.data[unit])
            except RelationDataError as exc:
                logger.error("ignoring %s's API endpoint: %s", unit.name, exc)
                refused.append(_bad(unit.name, exc))
                continue
            if data is not None:
                endpoints.add(data.api_endpoint)
        endpoint = f"waiting for an API endpoint from {app}"
        if refused:
            endpoint = f"waiting for a valid API endpoint: {'; '.join(refused)}"
        return control_plane, sorted(endpoints), Waits(cluster, endpoint, issuer=app)

    def _read_cni(
        self,
        relation: ops.Relation | None,
        control_plane: KubeControlProviderApp | None,
        waits: Waits,
    ) -> tuple[CniUnit | None, Waits]:
        """The cni subordinate's data (pod network of the service network's IP family)."""
        import dataclasses

        from kaji.interfaces import RelationDataError
        from kaji.interfaces._base import network
        from kaji.interfaces.cni import read_cni_unit

        if relation is None:
            return None, waits
        cni = None
        why = f"waiting for CNI data from {relation.app.name if relation.app else 'cni'}"
        for unit in sorted(relation.units, key=lambda u: u.name):
            try:
                cni = read_cni_unit(relation.data[unit])
                if cni is not None and control_plane is not None:
                    pods = network(cni.cluster_cidr)
                    services = network(control_plane.service_cidr)
                    if pods.version != services.version:
                        raise RelationDataError(
                            "cluster-cidr",
                            f"IPv{pods.version}, but {waits.issuer}'s service-cidr"
                            f" {services.compressed} is IPv{services.version}",
                        )
            except RelationDataError as exc:
                logger.error("ignoring %s's CNI data: %s", unit.name, exc)
                cni, why = None, f"waiting for valid CNI data: {_bad(unit.name, exc)}"
            if cni is not None:
                break
        return cni, dataclasses.replace(waits, cni=why)


def _bad(sender: str, error: RelationDataError) -> str:
    """``<sender> sent a bad '<key>' (<reason>)``, short enough for a status message."""
    reason = error.reason if len(error.reason) <= 120 else error.reason[:117] + "..."
    if error.key == "*":
        return f"{sender} sent a bad databag ({reason})"
    return f"{sender} sent a bad {error.key[:60]!r} ({reason})"


if __name__ == "__main__":  # pragma: nocover
    ops.main(WorkerCharm)

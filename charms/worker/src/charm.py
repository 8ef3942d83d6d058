#!/usr/bin/env python3
"""Charm entry point for kaji-worker: thin; the workload lives in src/kaji_worker."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ops

from kaji.operator import ReconcilingCharm

if TYPE_CHECKING:
    from kaji_worker.node import Node, Outcome

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
        try:
            self._outcome = self._reconcile()
        except Exception:
            Node(host_from_environment()).forget()
            raise
        if self._outcome.state == "blocked":
            logger.warning("%s", self._outcome.message)
        # Only a reconcile that reached the machine is remembered for update-status.
        if self._node is None:
            Node(host_from_environment()).forget()
        else:
            self._node.remember(self._outcome)

    def _on_update_status(self, _: ops.EventBase) -> None:
        """Reuse the last outcome while it holds (services up, no deadline passed)."""
        from kaji_worker.node import Node

        from kaji.host import host_from_environment

        self._outcome = Node(host_from_environment()).recall()
        if self._outcome is None:
            self.reconcile()

    def _on_leaving(self, _: ops.EventBase) -> None:
        from kaji_worker.node import Node

        from kaji.host import host_from_environment

        self._leaving = True
        Node(host_from_environment()).teardown()

    def assess_status(self) -> ops.StatusBase:
        """The node's state: what it waits for, or active with its node name."""
        if self._leaving:
            return ops.MaintenanceStatus("removing: node services stopped, files removed")
        if self._outcome is None:
            self.reconcile()
        assert self._outcome is not None
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
        from kaji.interfaces import RelationDataError, update_databag
        from kaji.interfaces.cni import CniPrincipalUnit, read_cni_unit
        from kaji.interfaces.kube_control import (
            KubeControlRequirerUnit,
            api_endpoints,
            read_provider_app,
        )

        # 1. Everything is read and validated before the machine is touched.
        try:
            options = parse_options(dict(self.config))
        except OptionError as exc:
            return Outcome("blocked", str(exc))
        kube_rel = self.model.get_relation(KUBE_CONTROL)
        cni_rel = self.model.get_relation(CNI)
        control_plane = None
        endpoints: list[str] = []
        if kube_rel is not None:
            if kube_rel.app is not None:
                try:
                    control_plane = read_provider_app(kube_rel.data[kube_rel.app])
                except RelationDataError as exc:
                    logger.error("ignoring malformed control-plane data: %s", exc)
            endpoints = api_endpoints(
                kube_rel.data[unit] for unit in sorted(kube_rel.units, key=str)
            )
        cni = None
        if cni_rel is not None:
            for unit in cni_rel.units:
                try:
                    cni = read_cni_unit(cni_rel.data[unit])
                except RelationDataError as exc:
                    logger.error("ignoring malformed cni data from %s: %s", unit.name, exc)
        if control_plane is not None:
            try:
                options.check_version(kubernetes.check_version(control_plane.kubernetes_version))
            except OptionError as exc:
                return Outcome("blocked", str(exc))
            except kubernetes.UnsupportedVersionError as exc:
                return Outcome(
                    "blocked", f"unusable Kubernetes version from the control plane: {exc}"
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


if __name__ == "__main__":  # pragma: nocover
    ops.main(WorkerCharm)

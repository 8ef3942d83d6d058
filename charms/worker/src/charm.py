#!/usr/bin/env python3
"""Charm entry point for kaji-worker: wiring only; the worker lives in src/kaji_worker."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ops
from kaji_worker import node as workload
from kaji_worker import relations, status
from kaji_worker.literals import (
    CNI,
    CONTAINERD_RESOURCE,
    FULL_RECONCILE_INTERVAL,
    KUBE_CONTROL,
    KUBERNETES_NODE_RESOURCE,
    RECONCILED_FILE,
)

import kaji.host
from kaji.config import ConfigError
from kaji.juju import attached_resource, binding_address
from kaji.lazy import lazy_import
from kaji.reconciler import ReconcileRecord, ReconcilingCharm

if TYPE_CHECKING:
    from kaji_worker import config
    from kaji_worker.node import Outcome

    from kaji import kubernetes
    from kaji.certs import KeyAndRequest
    from kaji.host import Host, ProxySettings
else:
    kubernetes = lazy_import("kaji.kubernetes")
    config = lazy_import("kaji_worker.config")

logger = logging.getLogger(__name__)


class _StopError(Exception):
    """A reconcile step found the node can go no further; ``outcome`` says why."""

    def __init__(self, outcome: Outcome, *, invalid_config: bool = False) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome
        #: Invalid config or proxies: nothing on the machine changes, not even the record.
        self.invalid_config = invalid_config


class WorkerCharm(ReconcilingCharm):
    """kaji-worker: a Kubernetes node with containerd, kubelet and kube-proxy."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.stop, self._on_leaving)
        framework.observe(self.on.remove, self._on_leaving)
        self.host: Host = kaji.host.host_from_environment()
        self._outcome: Outcome | None = None
        self._leaving = False
        self.remember_reconciles(self.host, RECONCILED_FILE, max_age=FULL_RECONCILE_INTERVAL)

    # -- events ------------------------------------------------------------------------------

    def _on_leaving(self, _: ops.EventBase) -> None:
        self._leaving = True
        workload.Node(self.host).teardown()

    def assess_status(self) -> ops.StatusBase | None:
        """What this dispatch's reconcile reached; None (status unchanged) when none ran.

        Read-only: collect-status runs after every event, the ones the charm does not
        reconcile on included, and must change nothing.
        """
        if self._leaving:
            return status.LEAVING
        return None if self._outcome is None else status.unit_status(self._outcome)

    # -- update-status (kaji.reconciler's record) ----------------------------------------------

    def reconcile_inputs(self) -> dict[str, Any]:
        """Besides config, proxies and relation data, a reconcile reads the name and address."""
        return {
            "hostname": self.host.hostname,
            "address": binding_address(self.model, KUBE_CONTROL),
        }

    def still_healthy(self, record: ReconcileRecord) -> bool:
        """Every service the last reconcile ensured still runs (real or recorded)."""
        services = record.facts.get("services")
        if not isinstance(services, dict):
            return False
        return workload.Node(self.host).still_running(services)

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make this machine the node the config and relations describe.

        1. load the config and the model's proxies (invalid: block, change nothing);
        2. read kube-control and cni (malformed data: ignored, named in the wait);
        3. check the cluster's version against the config;
        4. name the node and find its address;
        5. publish the node's identity (its CSR) and the principal data for cni;
        6. make the machine the node, as far as the data allows;
        7. turn waits no data can end into blocks naming the relation;
        8. record the reconcile for update-status (or forget the last record).
        """
        try:
            options, proxies = self._load_config()
            kube, cni = self._read_relations()
            self._check_version(options, kube)
            node_name, address = self._name_and_address()
            node = workload.Node(self.host)
            request = self._publish_identity(node, kube, node_name, address)
            outcome = self._reconcile_node(
                node, options, proxies, kube, cni, node_name, address, request
            )
            outcome = self._explain_missing_relations(outcome, kube, node_name)
        except _StopError as stop:
            self._outcome = stop.outcome
            if not stop.invalid_config:
                self._forget_reconciled()
        except Exception:
            self._forget_reconciled()
            raise
        else:
            self._outcome = outcome
            self._record(node, outcome)
        if self._outcome.state == "blocked":
            logger.warning("%s", self._outcome.message)

    def _load_config(self) -> tuple[config.WorkerConfig, ProxySettings]:
        try:
            return config.WorkerConfig.from_options(self.config), kaji.host.proxy_settings()
        except (ConfigError, kaji.host.ProxyError) as exc:
            raise _StopError(status.invalid_config(exc), invalid_config=True) from None

    def _read_relations(self) -> tuple[relations.KubeControl | None, relations.Cni | None]:
        kube = relations.read_kube_control(self.model.get_relation(KUBE_CONTROL))
        return kube, relations.read_cni(self.model.get_relation(CNI), kube)

    def _check_version(
        self, options: config.WorkerConfig, kube: relations.KubeControl | None
    ) -> None:
        if kube is None or kube.control_plane is None:
            return
        try:
            version = kubernetes.check_version(kube.control_plane.kubernetes_version)
            options.check_version(version)
        except ConfigError as exc:
            raise _StopError(status.invalid_config(exc), invalid_config=True) from None
        except kubernetes.UnsupportedVersionError as exc:
            raise _StopError(status.unusable_version(kube.issuer, exc)) from None

    def _name_and_address(self) -> tuple[str, str]:
        hostname = self.host.hostname
        try:
            node_name = kubernetes.node_name(hostname)
        except ValueError:
            raise _StopError(status.bad_hostname(hostname)) from None
        address = binding_address(self.model, KUBE_CONTROL)
        if address is None:
            raise _StopError(status.NO_ADDRESS)
        return node_name, address

    def _publish_identity(
        self,
        node: workload.Node,
        kube: relations.KubeControl | None,
        node_name: str,
        address: str,
    ) -> KeyAndRequest:
        request = node.ensure_identity(node_name, [address])
        unit = self.unit
        relations.publish_node(
            self.model.get_relation(KUBE_CONTROL), unit, node_name, address, request.csr_pem
        )
        relations.publish_principal(self.model.get_relation(CNI), unit, kube, node_name)
        return request

    def _reconcile_node(
        self,
        node: workload.Node,
        options: config.WorkerConfig,
        proxies: ProxySettings,
        kube: relations.KubeControl | None,
        cni: relations.Cni | None,
        node_name: str,
        address: str,
        request: KeyAndRequest,
    ) -> Outcome:
        resources = workload.Resources(
            attached_resource(self.model, CONTAINERD_RESOURCE),
            attached_resource(self.model, KUBERNETES_NODE_RESOURCE),
        )
        try:
            return node.reconcile(
                options,
                unit_name=self.unit.name,
                node_name=node_name,
                address=address,
                request=request,
                control_plane=kube.control_plane if kube is not None else None,
                endpoints=kube.endpoints if kube is not None else (),
                cni=cni.data if cni is not None else None,
                resources=resources,
                proxies=proxies,
                waits=status.waits(kube, cni),
            )
        except workload.NodeError as exc:
            return workload.Outcome("blocked", str(exc))

    def _explain_missing_relations(
        self, outcome: Outcome, kube: relations.KubeControl | None, node_name: str
    ) -> Outcome:
        return status.missing_relation(
            outcome,
            kube_control=self.model.get_relation(KUBE_CONTROL) is not None,
            cni=self.model.get_relation(CNI) is not None,
            cluster_known=kube is not None and kube.control_plane is not None,
            node_name=node_name,
        )

    def _record(self, node: workload.Node, outcome: Outcome) -> None:
        """Remember a reconcile that reached the machine; a blocked one is retried instead."""
        if outcome.state not in ("active", "waiting"):
            self._forget_reconciled()
            return
        self.record_reconciled(
            status.unit_status(outcome),
            recheck_after=node.recheck_after,
            facts={"services": node.ensured},
        )

    def _forget_reconciled(self) -> None:
        """Drop the record: the next update-status reconciles in full."""
        self.host.remove_file(RECONCILED_FILE)


if __name__ == "__main__":  # pragma: nocover
    ops.main(WorkerCharm)

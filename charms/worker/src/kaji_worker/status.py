"""The worker's unit status: every message, built from what a reconcile found."""

from __future__ import annotations

import ops

from kaji.config import ConfigError
from kaji.interfaces import Refusal
from kaji_worker.node import Outcome, Waits
from kaji_worker.relations import Cni, KubeControl

#: While stop and remove run: the node is gone from this machine.
LEAVING = ops.MaintenanceStatus("removing: node services stopped, files removed")
NO_ADDRESS = Outcome("waiting", "waiting for a network address")


def unit_status(outcome: Outcome) -> ops.StatusBase:
    """The unit status for ``outcome`` (active names what is only recorded)."""
    if outcome.state == "active":
        message = outcome.message
        if outcome.recorded:
            message += f" (recorded, not running: {', '.join(outcome.recorded)})"
        return ops.ActiveStatus(message)
    return ops.StatusBase.from_name(outcome.state, outcome.message)


def invalid_config(error: Exception) -> Outcome:
    """An invalid option (kaji.config.ConfigError) or unusable model proxy settings."""
    if isinstance(error, ConfigError):
        return Outcome("blocked", f"invalid config {error}")
    return Outcome("blocked", str(error))


def unusable_version(issuer: str, error: Exception) -> Outcome:
    """The Kubernetes version the control plane publishes is one this charm cannot run."""
    return Outcome("blocked", f"unusable 'kubernetes-version' from {issuer}: {error}")


def bad_hostname(hostname: str) -> Outcome:
    """The machine's hostname makes no valid node name."""
    return Outcome("blocked", f"hostname {hostname!r} is not a valid Kubernetes node name")


def bad(refusal: Refusal) -> str:
    """``<sender> sent a bad '<key>' (<reason>)``, short enough for a status message."""
    reason = refusal.reason if len(refusal.reason) <= 120 else refusal.reason[:117] + "..."
    if refusal.key == "*":
        return f"{refusal.sender} sent a bad databag ({reason})"
    return f"{refusal.sender} sent a bad {refusal.key[:60]!r} ({reason})"


def waits(kube: KubeControl | None, cni: Cni | None) -> Waits:
    """How the node words its waits: who has not sent what (sender and key when refused)."""
    found = Waits()
    if kube is not None:
        cluster = f"waiting for cluster data from {kube.issuer}"
        if kube.cluster_refusal is not None:
            cluster = f"waiting for valid cluster data: {bad(kube.cluster_refusal)}"
        endpoint = f"waiting for an API endpoint from {kube.issuer}"
        if kube.endpoint_refusals:
            refused = "; ".join(bad(r) for r in kube.endpoint_refusals)
            endpoint = f"waiting for a valid API endpoint: {refused}"
        found = Waits(cluster, endpoint, issuer=kube.issuer)
    if cni is not None:
        why = f"waiting for CNI data from {cni.sender}"
        if cni.refusal is not None:
            why = f"waiting for valid CNI data: {bad(cni.refusal)}"
        found = Waits(found.cluster, found.endpoint, why, found.issuer)
    return found


def missing_relation(
    outcome: Outcome, *, kube_control: bool, cni: bool, cluster_known: bool, node_name: str
) -> Outcome:
    """A wait that no data can end turns into a block naming the relation to add."""
    if outcome.state != "waiting":
        return outcome
    if not kube_control:
        return Outcome("blocked", "needs a control plane: relate kube-control")
    if not cni and cluster_known and "CNI" in outcome.message:
        return Outcome("blocked", f"node {node_name}: needs a CNI: relate cni")
    return outcome

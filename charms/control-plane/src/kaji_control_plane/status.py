"""The control plane's statuses: the messages a reconcile's findings are worded in.

Light on purpose (ops alone): the charm imports it on every hook, update-status included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ops

if TYPE_CHECKING:
    from kaji.config import ConfigError
    from kaji.interfaces import Refusal

#: The status of a unit that is being removed (set in its own departed/broken hooks).
LEAVING = ops.MaintenanceStatus("leaving: relation data is left as it is for the next leader")
NO_ADDRESS = ops.WaitingStatus("waiting for a network address")
NO_CLUSTER_CA = ops.WaitingStatus("waiting for the leader to create the cluster CA")
NO_ETCD = "waiting for etcd: relate to etcd:db"
NO_ETCD_DATA = "waiting for etcd: member URLs and CA"
NO_ETCD_CERTIFICATE = "waiting for etcd: client certificate"
NO_POD_NETWORK = "waiting for cni: the pod network (cluster CIDR)"


class Halt(Exception):  # noqa: N818 - not an error: a reconcile step that cannot go on yet
    """Raised by a reconcile step that cannot go on; ``status`` says why."""

    def __init__(self, status: ops.StatusBase, *, reached_machine: bool = True) -> None:
        super().__init__(status.message)
        self.status = status
        #: False when validation stopped it: nothing on the machine changed, not the record.
        self.reached_machine = reached_machine


class Notes:
    """What a reconcile refused or ignored (whose data, which key), for the status."""

    def __init__(self) -> None:
        self._notes: list[str] = []

    def add(self, text: str) -> None:
        """Note ``text`` once."""
        if text not in self._notes:
            self._notes.append(text)

    def added_to(self, status: ops.StatusBase) -> ops.StatusBase:
        """``status`` with the notes appended."""
        if not self._notes:
            return status
        return type(status)(f"{status.message}; {'; '.join(self._notes)}")


def brief(reason: str) -> str:
    """A refusal reason short enough for a status: the detail in brackets is in the log."""
    return reason.split(" (", 1)[0][:160]


def invalid_config(exc: ConfigError) -> ops.StatusBase:
    """Blocked, naming the option and what is wrong with it."""
    return ops.BlockedStatus(f"{exc.option}: {exc.reason}")


def bad_hostname(exc: ValueError) -> ops.StatusBase:
    """Blocked: the machine's hostname cannot be a node name."""
    return ops.BlockedStatus(f"hostname is not a valid node name: {exc}")


def no_binaries(version: object, exc: Exception) -> ops.StatusBase:
    """Blocked: the Kubernetes binaries could not be installed."""
    return ops.BlockedStatus(f"cannot install Kubernetes {version}: {exc}")


def missing_certificates(missing: list[str]) -> ops.StatusBase:
    """Waiting for the leader to sign these purposes."""
    return ops.WaitingStatus(f"waiting for certificates from the leader: {', '.join(missing)}")


def ignored_leader_data(refusal: Refusal) -> str:
    """A note: the leader's peer application data is malformed."""
    return f"ignoring the leader's peer data: {refusal.key}: {refusal.reason[:120]}"


def ignored_peer_data(refusal: Refusal) -> str:
    """A note: a peer unit's data is malformed."""
    return f"ignoring {refusal.sender}'s peer data: {refusal.key}: {refusal.reason[:100]}"


def refused_peer_certificate(unit: str, purpose: str, reason: str) -> str:
    """A note: the leader refused a peer unit's CSR."""
    return f"refusing {unit}'s {purpose} certificate request: {brief(reason)}"


def refused_node_certificate(unit: str, reason: str) -> str:
    """A note: the leader refused a worker's node CSR."""
    return f"refusing {unit}'s node certificate request: {brief(reason)}"


def invalid_etcd_data(refusal: Refusal) -> str:
    """Waiting: etcd's application data is malformed."""
    return (
        f"waiting for etcd: {refusal.sender}'s application data is invalid:"
        f" {refusal.key}: {refusal.reason[:100]}"
    )


def mismatched_etcd_certificate(sender: str, unit: str) -> str:
    """Waiting: etcd sent a client certificate for another request."""
    return (
        f"waiting for etcd: the client certificate {sender} sent"
        f" (certificates[{unit}]) does not match this unit's request"
    )


def invalid_cni_data(refusal: Refusal) -> str:
    """Waiting: a cni unit's data is malformed."""
    return (
        f"waiting for cni: {refusal.sender}'s data is invalid:"
        f" {refusal.key}: {refusal.reason[:100]}"
    )


def active(
    api_endpoint: str, count: int, *, recorded: bool, leader: bool, expiry: str | None
) -> ops.StatusBase:
    """Active: the API endpoint, how many control planes, and what to know about them."""
    notes = []
    if recorded:
        notes.append(
            "services and cluster setup recorded only (sandbox)"
            if leader
            else "services recorded only (sandbox)"
        )
    if expiry is not None:
        notes.append(expiry)
    suffix = f"; {', '.join(notes)}" if notes else ""
    plural = "s" if count != 1 else ""
    return ops.ActiveStatus(f"API {api_endpoint} ({count} control plane{plural}){suffix}")

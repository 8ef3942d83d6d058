"""kaji-cni's statuses: what a reconcile reached, as the unit shows it."""

from __future__ import annotations

from collections.abc import Sequence

import ops

from kaji.config import ConfigError
from kaji.interfaces import Refusal
from kaji_cni.literals import STATE_PATH

#: How many ignored peers a status message names before it only counts the rest.
NAMED_IN_STATUS = 3

WAITING_FOR_PEERS = ops.WaitingStatus("waiting for the network peer relation")
LEAVING = ops.MaintenanceStatus("leaving the pod network")
WAITING_FOR_PRINCIPAL = ops.WaitingStatus("waiting for the principal (cni relation)")
WAITING_FOR_ADDRESS = ops.WaitingStatus("waiting for an address on the network binding")
WAITING_FOR_ALLOCATIONS = ops.WaitingStatus("waiting for the leader to allocate pod subnets")
WAITING_FOR_SUBNET = ops.WaitingStatus("waiting for the leader to allocate this node's subnet")


class Halt(Exception):  # noqa: N818 - not an error: a reconcile step that cannot go on yet
    """Raised by a reconcile step that cannot go on; ``status`` says why."""

    def __init__(self, status: ops.StatusBase) -> None:
        super().__init__(status.message)
        self.status = status


def invalid_config(error: ConfigError) -> ops.StatusBase:
    """An option is invalid: nothing was touched."""
    return ops.BlockedStatus(f"invalid config {error}")


def invalid_allocations(refusal: Refusal, *, leader: bool, app: str) -> ops.StatusBase:
    """The allocation table is malformed: the leader must repair it, the others wait."""
    if leader:
        return ops.BlockedStatus(f"peer application data is invalid: {refusal.key}")
    return ops.WaitingStatus(f"waiting for the leader to repair {app}'s peer data: {refusal.key}")


def cidr_frozen(configured: str, allocated: str) -> ops.StatusBase:
    """``cidr`` changed after pod subnets were handed out in the old one."""
    return ops.BlockedStatus(
        f"invalid config cidr: cannot change to {configured} after pod subnets were"
        f" allocated; set it back to {allocated}"
    )


def cannot_allocate(reason: str) -> ops.StatusBase:
    """(Leader) the existing allocations cannot be kept."""
    return ops.BlockedStatus(f"cannot allocate pod subnets: {reason}")


def invalid_principal_data(refusal: Refusal) -> ops.StatusBase:
    """The principal sent malformed cni data."""
    message = f"{refusal.sender} sent invalid cni data: {refusal.key} ({refusal.reason})"
    return ops.BlockedStatus(message if len(message) <= 300 else message[:297] + "...")


def waiting_for_node_name(principal: str) -> ops.StatusBase:
    """The principal has not sent its node name yet."""
    return ops.WaitingStatus(f"waiting for the node name from {principal}")


def exhausted(node_prefix: int, cluster_cidr: str) -> ops.StatusBase:
    """No subnet of the configured size is left for this node."""
    return ops.BlockedStatus(
        f"no free /{node_prefix} left in {cluster_cidr} for this"
        " node; raise node-prefix for smaller node subnets or remove a node"
    )


def dataplane_failed(backend: str, error: Exception) -> ops.StatusBase:
    """Programming the pod network failed."""
    return ops.BlockedStatus(f"{backend}: {error}"[:400])


def active(
    backend: str, subnet: str, peers: int, refused: Sequence[Refusal], *, programmed: bool
) -> ops.StatusBase:
    """The node is on the pod network (or, in a sandbox, its plan is recorded)."""
    message = f"{backend}: pod subnet {subnet}, {peers} peer(s)"
    message += _ignored_note(refused)
    if not programmed:
        message += f"; sandbox: kernel not programmed, plan in {STATE_PATH}"
    return ops.ActiveStatus(message)


def _ignored_note(refused: Sequence[Refusal]) -> str:
    if not refused:
        return ""
    named = ", ".join(f"{r.sender}'s {r.key}" for r in refused[:NAMED_IN_STATUS])
    more = len(refused) - NAMED_IN_STATUS
    if more > 0:
        named += f" and {more} more"
    return f"; ignoring {named} (see debug-log)"

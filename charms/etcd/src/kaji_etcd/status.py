"""The etcd unit's statuses: built from what a reconcile found (read-only)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import ops

from kaji.interfaces import Refusal, RelationDataError
from kaji.lazy import lazy_import
from kaji_etcd.literals import EXPIRY_WARNING_DAYS, MAX_NOTES, MEMBER_CERT_FILE, RECORDED_NOTE

if TYPE_CHECKING:
    from kaji import clock, pki
    from kaji.config import ConfigError
    from kaji.host import Host
    from kaji_etcd import membership
    from kaji_etcd.member import Member
    from kaji_etcd.membership import ClusterView
else:
    clock = lazy_import("kaji.clock")
    pki = lazy_import("kaji.pki")
    membership = lazy_import("kaji_etcd.membership")

__all__ = [
    "NotReady",
    "Notes",
    "Outcome",
    "cluster_status",
    "expiry_note",
    "invalid_config",
    "members_text",
    "not_leaving",
    "still_settled",
    "unit_of_member",
]

logger = logging.getLogger(__name__)

LEFT = ops.MaintenanceStatus("this unit left the cluster; etcd is stopped")
NO_ADDRESS = ops.WaitingStatus("waiting for the unit's network address")
NO_PEER_RELATION = ops.WaitingStatus("waiting for the peer relation")
NO_CA = ops.WaitingStatus("waiting for the leader to create the cluster CA")
NO_CERTIFICATE = ops.WaitingStatus("waiting for a member certificate from the leader")
LEARNER = ops.WaitingStatus("learner: catching up before promotion")


def members_text(count: int) -> str:
    """``1 member``, ``3 members``."""
    return f"{count} member{'' if count == 1 else 's'}"


def unit_of_member(member_name: str) -> str:
    """``etcd-0`` -> ``etcd/0`` (the app name may itself hold hyphens)."""
    app, _, number = member_name.rpartition("-")
    return f"{app}/{number}"


def invalid_config(error: ConfigError) -> ops.StatusBase:
    """``invalid config: <option>: <reason>`` (logged)."""
    logger.error("invalid config: %s", error)
    return ops.BlockedStatus(f"invalid config: {error.option}: {error.reason}")


def not_installed(error: Exception) -> ops.StatusBase:
    """``cannot install etcd: <error>`` (logged)."""
    logger.error("cannot install etcd: %s", error)
    return ops.BlockedStatus(f"cannot install etcd: {error}"[:200])


def failed(error: Exception) -> ops.StatusBase:
    """``etcd failed: <error>`` (logged)."""
    logger.error("etcd on this unit: %s", error)
    return ops.WaitingStatus(f"etcd failed: {error}"[:200])


def not_leaving(blocker: str) -> ops.StatusBase:
    """The departing unit keeps its member: removing it would lose quorum."""
    return ops.BlockedStatus(f"not leaving: {blocker}; data kept")


def waiting_to_be_added(count: int) -> ops.StatusBase:
    """``waiting to be added to the cluster (N members)``."""
    return ops.WaitingStatus(f"waiting to be added to the cluster ({members_text(count)})")


class NotReady(Exception):  # noqa: N818 - a status, not an error
    """Reconcile stops here; ``status`` says why."""

    def __init__(self, status: ops.StatusBase) -> None:
        super().__init__(status.message)
        self.status = status


class Notes:
    """What this dispatch refused or ignored, for the end of the status (and the log)."""

    def __init__(self) -> None:
        self._notes: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._notes)

    def add(self, note: str) -> None:
        """Note ``note`` (already logged by the caller)."""
        self._notes.append(note)

    def refuse(self, sender: str, what: str, error: Exception | Refusal) -> None:
        """Note (and log, unless read_or_refuse did) that ``sender``'s ``what`` is ignored."""
        if isinstance(error, Refusal | RelationDataError):
            reason = f"{error.key} {error.reason}"
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        note = f"refusing {sender}'s {what}: {reason}"
        if not isinstance(error, Refusal):
            logger.warning("%s", note)
        self._notes.append(note if len(note) <= 160 else f"{note[:157]}...")

    def text(self) -> str:
        """``; note; note; and N more (see debug-log)``, or empty."""
        notes = list(dict.fromkeys(self._notes))
        if not notes:
            return ""
        shown, more = notes[:MAX_NOTES], len(notes) - MAX_NOTES
        tail = [f"and {more} more (see debug-log)"] if more > 0 else []
        return "; " + "; ".join([*shown, *tail])

    def on(self, status: ops.StatusBase) -> ops.StatusBase:
        """``status`` with the notes appended (active statuses already carry them)."""
        if not self._notes or status.name == "active":
            return status
        return ops.StatusBase.from_name(status.name, f"{status.message}{self.text()}")


class Outcome:
    """What one dispatch reached: its status (the last one set wins), notes, etcd's view."""

    def __init__(self) -> None:
        self.status: ops.StatusBase | None = None
        self.notes = Notes()
        self._view: ClusterView | None = None

    def view(self, member: Member, endpoints: Callable[[], list[str]]) -> ClusterView:
        """What etcd says, asked once per dispatch (live: through ``endpoints()``)."""
        if self._view is None:
            urls = endpoints() if member.binaries.live else []
            self._view = membership.observe_cluster(member, urls)
        return self._view

    def conclude(
        self,
        member: Member,
        host: Host,
        recorded_members: Callable[[], int],
        endpoints: Callable[[], list[str]],
    ) -> ops.StatusBase:
        """The final status: the one set, else the cluster's; the notes appended."""
        if expiry := expiry_note(host):
            self.notes.add(expiry)
        if self.status is None:
            count = 0 if member.binaries.live else recorded_members()
            view = self.view(member, endpoints)
            self.status = cluster_status(member, view, count, self.notes.text())
        self.status = self.notes.on(self.status)
        return self.status


def expiry_note(host: Host) -> str | None:
    """``member certificate expires in N days`` when under EXPIRY_WARNING_DAYS, else None."""
    cert = host.read_text(MEMBER_CERT_FILE)
    if not cert:
        return None
    try:
        info = pki.read_certificate(cert)
    except pki.PKIError:
        return None
    left = info.not_after - clock.now()
    if left.days >= EXPIRY_WARNING_DAYS:
        return None
    return f"member certificate expires in {max(left.days, 0)} days"


def cluster_status(
    member: Member, view: ClusterView, recorded_members: int, notes: str
) -> ops.StatusBase:
    """The cluster as this unit sees it: healthy, degraded, no quorum, or still joining.

    ``recorded_members``: how many members the leader publishes (etcd only recorded);
    ``notes``: what to append to an active status.
    """
    if not member.binaries.live:
        return ops.ActiveStatus(f"{members_text(recorded_members)} ({RECORDED_NOTE}){notes}")
    if view.error:
        return ops.WaitingStatus(f"etcd unreachable: {view.error}")
    voters = view.voters()
    me = next((m for m in view.members if member.peer_url in m.peer_urls), None)
    if me is None:
        return ops.WaitingStatus("waiting to be added to the cluster")
    if me.is_learner:
        return LEARNER
    healthy = [m for m in voters if m.id in view.healthy]
    quorum = len(voters) // 2 + 1
    leader = next((m.name for m in voters if m.id == view.leader_id), None)
    leader_text = f"leader {unit_of_member(leader)}" if leader else "no leader"
    if len(healthy) < quorum:
        sick = ", ".join(sorted(m.name or m.hex_id for m in voters if m not in healthy))
        return ops.BlockedStatus(
            f"no quorum: {len(healthy)} of {len(voters)} members healthy (unhealthy: {sick}); "
            "restart or replace them, or restore from a snapshot"
        )
    if len(healthy) < len(voters):
        sick = ", ".join(sorted(m.name or m.hex_id for m in voters if m not in healthy))
        return ops.ActiveStatus(
            f"degraded: {len(healthy)} of {len(voters)} members healthy (unhealthy: {sick}), "
            f"{leader_text}{notes}"
        )
    return ops.ActiveStatus(f"healthy, {members_text(len(voters))}, {leader_text}{notes}")


def still_settled(
    member: Member, view: ClusterView, members: list[object], recorded: tuple[str, str]
) -> bool:
    """Whether the cluster is as the last reconcile recorded it: active, settled, same members."""
    now = cluster_status(member, view, 0, "")
    settled = not any(m.is_learner or not m.started for m in view.members)
    return (
        isinstance(now, ops.ActiveStatus)
        and settled
        and {m.name for m in view.members} == {str(n) for n in members}
        and (now.name, now.message) == recorded
    )

"""The cluster's members: who is in, who joins next, who may leave (no ops import).

The leader drives membership from what etcd lists and the peers' validated data: departed
members are removed unless that would lose quorum, started learners are promoted, and the next
unit with a member certificate is added as a learner -- one join at a time. Every function takes
a :class:`kaji_etcd.member.Member` and plain (typed) data.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kaji.host import HostError
from kaji_etcd import EtcdError
from kaji_etcd.literals import DATA_ROOT, DEPARTED_MARKER, LEAVING_MARKER

if TYPE_CHECKING:
    from kaji.host import Host
    from kaji.interfaces.etcd_peers import EtcdPeerApp, EtcdPeerUnit
    from kaji_etcd.member import JoinRecord, Member

__all__ = [
    "ClusterView",
    "MemberInfo",
    "Membership",
    "cluster_token",
    "initial_cluster",
    "joined",
    "leader_membership",
    "leave",
    "mark_leaving",
    "member_client_urls",
    "new_cluster_token",
    "observe_cluster",
    "removal_blocker",
    "retire_stale",
    "settle",
    "stale_reason",
    "start_member",
]

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class MemberInfo:
    """One entry of etcd's member list."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def hex_id(self) -> str:
        """The ID as etcdctl prints and takes it."""
        return f"{self.id:x}"

    @property
    def started(self) -> bool:
        """Whether the member has started (an added member has no name until it does)."""
        return bool(self.name)


@dataclass
class ClusterView:
    """What etcd says about the cluster right now (live mode), or the recorded membership."""

    live: bool
    members: list[MemberInfo] = field(default_factory=list)
    healthy: set[int] = field(default_factory=set)
    leader_id: int | None = None
    error: str | None = None

    def voters(self) -> list[MemberInfo]:
        """The voting members."""
        return [m for m in self.members if not m.is_learner]

    def healthy_client_urls(self) -> list[str]:
        """Client URLs of the healthy voting members."""
        return sorted(m.client_urls[0] for m in self.voters() if m.id in self.healthy)


@dataclass(frozen=True)
class Membership:
    """What the leader publishes: members (name -> peer URL), cluster state, member IDs.

    ``blocked`` says why a departed member stays (its removal would lose quorum).
    """

    members: dict[str, str]
    state: str
    ids: dict[str, str]
    blocked: str | None = None


def initial_cluster(members: Mapping[str, str]) -> str:
    """``--initial-cluster`` for ``members`` (name -> peer URL): ``name=url`` pairs, sorted."""
    return ",".join(f"{name}={url}" for name, url in sorted(members.items()))


def removal_blocker(
    members: Sequence[MemberInfo], healthy_ids: Iterable[int], member_id: int
) -> str | None:
    """Why removing ``member_id`` would lose quorum, or None when it is safe.

    Learners do not vote and are not counted. Members already unhealthy count against quorum:
    after the removal, the healthy voters left must be a majority of the voters left.
    """
    voters = [m for m in members if not m.is_learner]
    target = next((m for m in members if m.id == member_id), None)
    if target is None or target.is_learner:
        return None
    healthy = {m.id for m in voters} & set(healthy_ids)
    remaining = len(voters) - 1
    if remaining == 0:
        return f"{target.name or target.hex_id} is the last member"
    healthy_left = len(healthy - {member_id})
    quorum = remaining // 2 + 1
    if healthy_left < quorum:
        return (
            f"removing {target.name or target.hex_id} would leave {healthy_left} healthy of "
            f"{remaining} voting members (quorum {quorum})"
        )
    return None


def cluster_token(member: Member) -> str:
    """The token of the cluster this member's data belongs to, or a new one.

    Used when the peer application data is missing or malformed: keeping the token the
    members' data was made with keeps them from setting it aside as another cluster's.
    """
    record = member.join_record()
    if record is not None and _TOKEN.fullmatch(record.token):
        return record.token
    return new_cluster_token()


def new_cluster_token() -> str:
    """A fresh cluster token."""
    return f"kaji-etcd-{os.urandom(8).hex()}"  # as secrets.token_hex(8)


def observe_cluster(member: Member, endpoints: Sequence[str]) -> ClusterView:
    """What etcd says through ``endpoints``: members, their health, the raft leader."""
    if not member.binaries.live:
        return ClusterView(live=False)
    view = ClusterView(live=True)
    try:
        view.members = member.member_list(endpoints)
        urls = [m.client_urls[0] for m in view.voters() if m.client_urls]
        health = member.endpoint_health(urls)
        view.healthy = {m.id for m in view.voters() if m.client_urls and health[m.client_urls[0]]}
        view.leader_id = member.leader_id(sorted(u for u, ok in health.items() if ok))
    except EtcdError as error:
        view.error = str(error).splitlines()[-1][:120]
    return view


def member_client_urls(
    member: Member, app: EtcdPeerApp | None, voting_client_urls: Iterable[str], own_voting: bool
) -> list[str]:
    """Where to reach the cluster: the members the leader published, and voting units.

    A member's client URL is its peer URL's host on the client port; a voting unit's is
    its validated peer data's (``voting_client_urls``). This unit's own URL is left out until it
    is a voting member: a learner cannot answer cluster requests, and etcdctl tries its
    endpoints in turn.
    """
    port = member.config.client_port
    urls = {_on_port(url, port) for url in app.members.values()} if app else set()
    urls |= set(voting_client_urls)
    if own_voting:
        urls.add(member.client_url)
    else:
        urls.discard(member.client_url)
    return sorted(urls)


def leader_membership(
    member: Member,
    current: EtcdPeerApp | None,
    peers: Mapping[str, EtcdPeerUnit],
    certificates: Collection[str],
    present: set[str],
    endpoints: list[str],
) -> Membership:
    """The members map, cluster state and member IDs to publish; changes etcd if live.

    ``peers``: every unit's valid peer data; ``certificates``: the units with a member
    certificate; ``present``: the member names of the units still in the relation.
    """
    if not current or not current.members:
        return Membership({member.name: member.peer_url}, "new", {})
    old_ids = dict(current.member_ids)
    if not member.binaries.live:
        members = {n: u for n, u in current.members.items() if n in present}
        for unit, data in peers.items():
            if unit in certificates:
                members[data.member_name] = data.peer_url
        started = member.is_running() or current.cluster_state == "existing"
        return Membership(members, "existing" if started else "new", {})
    blocked: list[str] = []
    try:
        listed = _change_membership(member, endpoints, peers, certificates, present, blocked)
    except EtcdError as error:
        logger.warning("cannot reach etcd to manage membership: %s", error)
        stays = blocked[-1] if blocked else None
        return Membership(dict(current.members), current.cluster_state, old_ids, stays)
    by_url = {d.peer_url: d.member_name for d in peers.values()}
    members, ids = {}, {}
    for info in listed:
        name = info.name or next((by_url[u] for u in info.peer_urls if u in by_url), "")
        if name and info.peer_urls:
            members[name] = info.peer_urls[0]
            ids[name] = info.hex_id
    return Membership(members, "existing", ids, blocked[-1] if blocked else None)


def _change_membership(
    member: Member,
    endpoints: list[str],
    peers: Mapping[str, EtcdPeerUnit],
    certificates: Collection[str],
    present: set[str],
    blocked: list[str],
) -> list[MemberInfo]:
    """Remove departed members, promote started learners, add the next unit as a learner.

    Appends to ``blocked`` why a departed member stays.
    """
    listed = member.member_list(endpoints)
    urls_present = {d.peer_url for d in peers.values()}
    for info in listed:
        named = info.name and info.name in present
        if named or (not info.name and set(info.peer_urls) & urls_present):
            continue
        blocker = member.remove_safely(info.id, endpoints)
        if blocker:
            message = f"{info.name or info.hex_id} departed but stays a member: {blocker}"
            logger.error("%s; recover the unhealthy members, then it will be removed", message)
            blocked.append(message)
        else:
            logger.info("removed departed member %s (%s)", info.name, info.hex_id)
    listed = member.member_list(endpoints)
    for info in listed:
        if info.is_learner and info.started:
            try:
                member.promote(info.id, endpoints)
            except EtcdError as error:
                logger.info("learner %s not promoted yet: %s", info.name, error)
    listed = member.member_list(endpoints)
    if any(m.is_learner or not m.started for m in listed):
        return listed  # one join at a time
    known = {u for m in listed for u in m.peer_urls}
    for unit in sorted(certificates, key=_unit_number):
        data = peers[unit]
        if data.peer_url not in known and data.member_name != member.name:
            logger.info("adding %s as a learner", data.member_name)
            return member.add_learner(data.member_name, data.peer_url, endpoints)
    return listed


def stale_reason(record: JoinRecord | None, app: EtcdPeerApp, name: str) -> str | None:
    """Why this machine's data no longer belongs to the cluster ``app`` describes, or None."""
    if record is None:
        return None
    if record.token != app.cluster_token:
        return "cluster-restored"
    if app.cluster_state == "existing":
        if name not in app.members:
            return "member-removed"
        if record.member_id and app.member_ids.get(name) not in (None, record.member_id):
            return "member-replaced"
    return None


def joined(member: Member, app: EtcdPeerApp | None, own_voting: bool) -> bool:
    """Whether this member has joined the cluster ``app`` describes (its settings may settle).

    Joined: the cluster is ``existing``, the leader lists this member, the record belongs to
    the current cluster and -- when etcd runs -- this unit is a voting member (its
    ``member-id`` is published) whose WAL exists (checked by ``Member.settle``).
    """
    record = member.join_record()
    if app is None or record is None or record.token != app.cluster_token:
        return False
    if app.cluster_state != "existing" or member.name not in app.members:
        return False
    return not member.binaries.live or own_voting


def retire_stale(member: Member, app: EtcdPeerApp) -> bool:
    """Set this machine's data aside (kept) when it no longer belongs to the cluster."""
    reason = stale_reason(member.join_record(), app, member.name)
    if reason is None:
        return False
    where = member.retire_data(reason)
    logger.warning("this member's data is stale (%s); kept in %s", reason, where)
    return True


def start_member(member: Member, app: EtcdPeerApp) -> bool:
    """Start this member (or keep it running) in the cluster ``app`` describes.

    A member without data bootstraps the cluster when it is its only member, or joins it when
    the leader has added it; False when the leader has not added it yet (nothing started).
    """
    record = member.join_record()
    if record is None:
        if member.name not in app.members:
            return False
        if app.cluster_state == "new" and set(app.members) == {member.name}:
            record = member.bootstrap(app.cluster_token)
        else:
            record = member.start_joining(app.cluster_token, app.members)
    else:
        member.ensure_running(record)
    known = app.member_ids.get(member.name)
    if member.binaries.live and record.member_id is None and known:
        member.write_join_record(record.with_member_id(known))
    return True


def settle(member: Member, app: EtcdPeerApp | None, own_voting: bool) -> None:
    """Once this member has joined, render its initial-* settings canonically (no restart)."""
    if not joined(member, app, own_voting):
        return
    assert app is not None
    try:
        member.settle(app.members)
    except (HostError, OSError) as error:
        logger.warning("cannot settle the etcd config: %s", error)


def mark_leaving(host: Host, unit: str) -> None:
    """Remember that ``unit`` (not an earlier one of this machine) is being removed.

    From now on it only leaves; the charm reads the marker on every hook.
    """
    if host.read_text(LEAVING_MARKER) != f"{unit}\n":
        logger.info("this unit is being removed: it only leaves from now on")
        host.ensure_directory(posixpath.dirname(LEAVING_MARKER), 0o700)
        host.write_file(LEAVING_MARKER, f"{unit}\n", mode=0o600)


def leave(member: Member, endpoints: list[str]) -> str | None:
    """Remove this member from the cluster and stop it; why not, when that would lose quorum.

    Touches only this machine and etcd's member list. A running member's data is set aside
    (kept); the departed marker says this unit has left.
    """
    if member.binaries.live and member.is_running():
        try:
            listed = member.member_list(endpoints or None)
            me = next((m for m in listed if member.peer_url in m.peer_urls), None)
            blocker = None if me is None else member.remove_safely(me.id, endpoints)
        except EtcdError as error:
            blocker = f"etcd could not be asked: {error}"
        if blocker:
            logger.error("not leaving the etcd cluster: %s; the data is kept", blocker)
            return blocker
        member.retire_data("left")
    else:
        member.stop()
    member.host.ensure_directory(DATA_ROOT, 0o700)
    member.host.write_file(DEPARTED_MARKER, "left the cluster\n")
    return None


def _on_port(url: str, port: int) -> str:
    """``https://<url's host>:<port>`` (IPv6 hosts bracketed)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _unit_number(unit: str) -> tuple[str, int]:
    app, _, number = unit.rpartition("/")
    return (app, int(number) if number.isdigit() else 0)

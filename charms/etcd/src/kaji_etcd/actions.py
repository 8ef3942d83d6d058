"""The etcd charm's actions: each does its own job and nothing else.

They install nothing, write no file but their own output, restart nothing but what restore
rebuilds and change no relation data but restore's new membership.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ops

from kaji.juju import attached_resource
from kaji.lazy import lazy_import
from kaji_etcd import EtcdError
from kaji_etcd.literals import RECORDED_NOTE, SNAPSHOT_RESOURCE

if TYPE_CHECKING:
    from kaji.host import Host
    from kaji.interfaces import etcd_peers
    from kaji_etcd import membership
    from kaji_etcd.member import Member
    from kaji_etcd.relations import Peers
else:
    etcd_peers = lazy_import("kaji.interfaces.etcd_peers")
    membership = lazy_import("kaji_etcd.membership")

__all__ = [
    "Context",
    "action_member",
    "defrag",
    "health",
    "member_list",
    "restore",
    "run",
    "snapshot",
]


@dataclass(frozen=True)
class Context:
    """What an action may use: leadership, whether the unit leaves, its member, the peers."""

    leader: bool
    leaving: bool
    find_member: Callable[[], Member]
    peers: Peers | None
    host: Host
    model: ops.Model


def run(event: ops.ActionEvent, context: Context) -> None:
    """Run the action ``event`` is for."""
    name = event.handle.kind.removesuffix("_action")
    if name == "restore":
        if not context.leader:
            event.fail("run restore on the leader unit (juju run etcd/leader restore)")
        elif context.leaving:
            event.fail("this unit is being removed; run restore on the next leader")
        else:
            member = action_member(event, context.find_member)
            restore(event, member, context.peers, context.host, context.model)
        return
    member = action_member(event, context.find_member)
    if name == "snapshot":
        if member is not None:
            snapshot(event, member)
    elif member is not None and context.peers is not None:
        {"health": health, "member_list": member_list, "defrag": defrag}[name](
            event, member, context.peers
        )


def action_member(event: ops.ActionEvent, find: Callable[[], Member]) -> Member | None:
    """This unit's running member (``find`` installs and writes nothing), or None (failed)."""
    try:
        member = find()
    except Exception as error:
        event.fail(f"etcd is not set up on this unit: {error}")
        return None
    if not member.binaries.live:
        event.fail(RECORDED_NOTE)
        return None
    if not member.is_running():
        event.fail("etcd is not running on this unit")
        return None
    return member


def _absolute(event: ops.ActionEvent) -> str | None:
    """The ``path`` parameter ('' when not given); None (failed) when it is relative."""
    path = str(event.params.get("path") or "")
    if path and not path.startswith("/"):
        event.fail("path must be absolute")
        return None
    return path


def snapshot(event: ops.ActionEvent, member: Member) -> None:
    """``etcdctl snapshot save``, verified; where it is, its size, hash, revision and keys."""
    path = _absolute(event)
    if path is None:
        return
    try:
        info = member.snapshot(path or None)
    except EtcdError as error:
        event.fail(f"snapshot failed: {error}")
        return
    event.set_results(
        {
            "path": info.path,
            "size": info.size,
            "sha256": info.sha256,
            "revision": info.revision,
            "keys": info.total_keys,
        }
    )


def restore(
    event: ops.ActionEvent,
    member: Member | None,
    peers: Peers | None,
    host: Host,
    model: ops.Model,
) -> None:
    """Restore the snapshot as a new one-member cluster and publish that (its whole job).

    The other units set their data aside when they see the new cluster token, and the
    leader adds them back one by one in the hooks that follow, as for any new member.
    """
    if member is None or peers is None:
        if peers is None:
            event.fail("no peer relation yet")
        return
    path = _absolute(event)
    if path is None:
        return
    real = str(host.path(path)) if path else attached_resource(model, SNAPSHOT_RESOURCE)
    if real is None:
        event.fail("give path= or attach the snapshot resource")
        return
    current = peers.app_data()
    if current is None:
        event.fail("the cluster is not set up yet")
        return
    token = membership.new_cluster_token()
    event.log(f"restoring {path or 'the snapshot resource'} as a new cluster")
    try:
        member.restore(real, token)
    except EtcdError as error:
        event.fail(f"restore failed: {error}")
        return
    if not member.wait_healthy(timeout=60):
        event.fail("restored member did not become healthy; see its log")
        return
    own = member.own_id()
    ids = {member.name: f"{own:x}"} if own is not None else {}
    if own is not None:
        record = member.join_record()
        if record is not None:
            member.write_join_record(record.with_member_id(f"{own:x}"))
    app = etcd_peers.EtcdPeerApp(
        ca_cert=current.ca_cert,
        cluster_token=token,
        cluster_state="existing",
        members={member.name: member.peer_url},
        certificates=current.certificates,
        member_ids=ids,
        recorded_only=False,
    )
    peers.replace_app(app)
    status = member.snapshot_status(real)
    event.set_results(
        {"member": member.name, "revision": status.get("revision", 0), "token": token}
    )


def health(event: ops.ActionEvent, member: Member, peers: Peers) -> None:
    """Per-member id, health, learner flag and client URL; the raft leader; overall health."""
    view = membership.observe_cluster(member, peers.client_urls(member) or [member.client_url])
    if view.error:
        event.fail(f"etcd unreachable: {view.error}")
        return
    leader = next((m.name for m in view.members if m.id == view.leader_id), "")
    event.set_results(
        {
            "leader": leader,
            "healthy": str(len(view.healthy) == len(view.voters())).lower(),
            "members": {
                m.name or m.hex_id: {
                    "id": m.hex_id,
                    "healthy": str(m.id in view.healthy).lower(),
                    "learner": str(m.is_learner).lower(),
                    "client-url": ",".join(m.client_urls),
                }
                for m in view.members
            },
        }
    )


def member_list(event: ops.ActionEvent, member: Member, peers: Peers) -> None:
    """Etcd's member list as JSON, and how many."""
    try:
        members = member.member_list(peers.client_urls(member) or None)
    except EtcdError as error:
        event.fail(str(error))
        return
    listed = [
        {
            "id": m.hex_id,
            "name": m.name,
            "peer-urls": list(m.peer_urls),
            "client-urls": list(m.client_urls),
            "learner": m.is_learner,
        }
        for m in members
    ]
    event.set_results({"members": json.dumps(listed, sort_keys=True), "count": len(members)})


def defrag(event: ops.ActionEvent, member: Member, peers: Peers) -> None:
    """Defragment this member, or (``all``) every member one after the other."""
    endpoints = [member.client_url]
    try:
        if event.params.get("all"):
            listed = member.member_list(peers.client_urls(member))
            endpoints = sorted(m.client_urls[0] for m in listed if m.client_urls)
        output = member.defrag(endpoints)
    except EtcdError as error:
        event.fail(f"defrag failed: {error}")
        return
    event.set_results({"output": output, "members": len(endpoints)})

"""Departing units leave the member list first, never at the cost of quorum; rejoining is clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import (
    ADDRESS,
    FakeEtcd,
    app_bag,
    ca_secret,
    decoded,
    own_csr,
    peer_app,
    peer_relation,
    peer_units,
    unit_context,
)
from kaji_etcd.membership import MemberInfo, removal_blocker
from ops import testing

from kaji import pki


def _member(n: int, learner: bool = False) -> MemberInfo:
    return MemberInfo(n, f"etcd-{n}", (f"https://h{n}:2380",), (), learner)


@pytest.mark.parametrize(
    ("voters", "healthy", "target", "refused"),
    [
        (3, {0, 1, 2}, 2, False),  # 3 -> 2, both healthy
        (3, {0, 2}, 2, True),  # 3 -> 2 with etcd-1 already down: 1 of 2 is no quorum
        (3, {0, 2}, 1, False),  # removing the unhealthy one is fine
        (2, {0, 1}, 1, False),  # 2 -> 1
        (2, {0}, 0, True),  # the healthy one of two
        (5, {0, 1, 2}, 4, False),  # 5 -> 4 with 3 healthy: quorum 3 holds
        (5, {0, 1, 4}, 4, True),  # 5 -> 4 with 2 healthy left: no quorum
        (1, {0}, 0, True),  # the last member
    ],
)
def test_removal_blocker(voters: int, healthy: set[int], target: int, refused: bool) -> None:
    members = [_member(n) for n in range(voters)]
    assert (removal_blocker(members, healthy, target) is not None) is refused


def test_learners_do_not_count_towards_quorum() -> None:
    members = [_member(0), _member(1), _member(2, learner=True)]
    assert removal_blocker(members, {0, 1, 2}, 1) is None
    assert removal_blocker(members, {0, 2}, 0) is not None
    assert removal_blocker(members, {0}, 2) is None  # removing a learner is always ok


# --- the leader removes departed units ------------------------------------------------------


def _leader_with_three(
    ca: pki.CertificateAuthority, fake: FakeEtcd, present: tuple[int, ...]
) -> testing.State:
    fake.add("etcd-0", ADDRESS)
    peers = peer_units(1, 2)
    for p in peers:
        fake.add(p.data.member_name, p.address)
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    members.update({p.data.member_name: p.data.peer_url for p in peers})
    certificates = {p.name: p.certificate(ca) for p in peers}
    bag = app_bag(ca, members, certificates)
    relation = peer_relation([p for p in peers if p.number in present], local_app_data=bag)
    return testing.State(leader=True, relations={relation}, secrets={ca_secret(ca)})


def test_leader_removes_a_departed_member(
    ctx: testing.Context, ca: pki.CertificateAuthority, fake_etcd: FakeEtcd
) -> None:
    state = _leader_with_three(ca, fake_etcd, present=(1,))
    relation = state.get_relations("cluster")[0]
    state = ctx.run(ctx.on.relation_departed(relation, remote_unit=2, departing_unit=2), state)
    assert ("remove", f"{fake_etcd.by_name('etcd-0').id + 2:x}") in fake_etcd.calls
    assert set(decoded(peer_app(state))["members"]) == {"etcd-0", "etcd-1"}
    assert state.unit_status == testing.ActiveStatus("healthy, 2 members, leader etcd/0")


def test_leader_keeps_a_departed_member_when_removal_would_lose_quorum(
    ctx: testing.Context, ca: pki.CertificateAuthority, fake_etcd: FakeEtcd
) -> None:
    state = _leader_with_three(ca, fake_etcd, present=(1,))
    fake_etcd.unhealthy.add(fake_etcd.by_name("etcd-1").id)
    relation = state.get_relations("cluster")[0]
    state = ctx.run(ctx.on.relation_departed(relation, remote_unit=2, departing_unit=2), state)
    assert not [c for c in fake_etcd.calls if c[0] == "remove"]
    assert fake_etcd.by_name("etcd-2")
    assert state.unit_status == testing.BlockedStatus(
        "etcd-2 departed but stays a member: removing etcd-2 would leave 1 healthy of "
        "2 voting members (quorum 2)"
    )
    assert any("stays a member" in line.message for line in ctx.juju_log)


def test_recorded_leader_drops_departed_units(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    peers = peer_units(1, 2)
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    members.update({p.data.member_name: p.data.peer_url for p in peers})
    bag = app_bag(ca, members, {})
    relation = peer_relation(peers[:1], local_app_data=bag)
    state = testing.State(leader=True, relations={relation}, secrets={ca_secret(ca)})
    state = ctx.run(ctx.on.relation_departed(relation, remote_unit=2, departing_unit=2), state)
    assert set(decoded(peer_app(state))["members"]) == {"etcd-0", "etcd-1"}
    assert set(decoded(peer_app(state))["certificates"]) == {"etcd/0", "etcd/1"}


# --- a departing unit removes itself ----------------------------------------------------------


def _running_unit_one(
    ca: pki.CertificateAuthority, fake: FakeEtcd
) -> tuple[testing.Context, testing.State]:
    """etcd/1, a started voting member of etcd-0, etcd-1, etcd-2."""
    ctx = unit_context(1)
    leader, third = peer_units(0, 2)
    fake.add("etcd-0", leader.address)
    fake.add("etcd-1", ADDRESS)
    fake.add("etcd-2", third.address)
    members = {"etcd-0": leader.data.peer_url, "etcd-1": f"https://{ADDRESS}:2380"}
    members["etcd-2"] = third.data.peer_url
    first = testing.State(relations={peer_relation([leader, third])})
    csr = own_csr(ctx.run(ctx.on.install(), first))
    certificates = {"etcd/1": pki.sign_csr(csr, ca, pki.Profile.PEER)}
    bag = app_bag(ca, members, certificates)
    state = testing.State(relations={peer_relation([leader, third], local_app_data=bag)})
    return ctx, ctx.run(ctx.on.config_changed(), state)


def test_departing_unit_removes_itself_before_stopping(
    ca: pki.CertificateAuthority, fake_etcd: FakeEtcd, sandbox: Path
) -> None:
    ctx, state = _running_unit_one(ca, fake_etcd)
    own = fake_etcd.by_name("etcd-1").id
    relation = state.get_relations("cluster")[0]
    state = ctx.run(ctx.on.relation_departed(relation, remote_unit=0, departing_unit=1), state)
    assert ("remove", f"{own:x}") in fake_etcd.calls
    assert state.unit_status == testing.MaintenanceStatus(
        "this unit left the cluster; etcd is stopped"
    )
    assert not (sandbox / "var/lib/kaji/etcd/data").exists()
    assert list((sandbox / "var/lib/kaji/etcd/retired").iterdir())  # set aside, not deleted
    # Later hooks do not bring it back.
    state = ctx.run(ctx.on.config_changed(), state)
    assert state.unit_status == testing.MaintenanceStatus(
        "this unit left the cluster; etcd is stopped"
    )
    assert "etcd-1" not in {m.name for m in fake_etcd.members.values()}


def test_departing_unit_that_would_break_quorum_stays_and_keeps_its_data(
    ca: pki.CertificateAuthority, fake_etcd: FakeEtcd, sandbox: Path
) -> None:
    ctx, state = _running_unit_one(ca, fake_etcd)
    fake_etcd.unhealthy.add(fake_etcd.by_name("etcd-2").id)
    relation = state.get_relations("cluster")[0]
    state = ctx.run(ctx.on.relation_departed(relation, remote_unit=0, departing_unit=1), state)
    assert not [c for c in fake_etcd.calls if c[0] == "remove"]
    assert state.unit_status == testing.BlockedStatus(
        "not leaving: removing etcd-1 would leave 1 healthy of 2 voting members (quorum 2); "
        "data kept"
    )
    assert (sandbox / "var/lib/kaji/etcd/data").is_dir()
    assert (sandbox / "var/lib/kaji/etcd/member.json").exists()
    state = ctx.run(ctx.on.stop(), state)
    assert state.unit_status.name == "blocked"
    assert (sandbox / "var/lib/kaji/etcd/member.json").exists()


def test_stop_removes_the_member_too(ca: pki.CertificateAuthority, fake_etcd: FakeEtcd) -> None:
    ctx, state = _running_unit_one(ca, fake_etcd)
    state = ctx.run(ctx.on.stop(), state)
    assert "etcd-1" not in {m.name for m in fake_etcd.members.values()}


def test_member_removed_behind_its_back_sets_data_aside_and_rejoins(
    ca: pki.CertificateAuthority, fake_etcd: FakeEtcd, sandbox: Path
) -> None:
    ctx, state = _running_unit_one(ca, fake_etcd)
    old_id = fake_etcd.by_name("etcd-1").id
    relation = state.get_relations("cluster")[0]
    # The leader saw etcd-1 gone from etcd and no longer lists it.
    del fake_etcd.members[old_id]
    app = decoded(dict(relation.local_app_data))
    members = {n: u for n, u in app["members"].items() if n != "etcd-1"}
    bag = app_bag(ca, members, app["certificates"])
    state = testing.State(relations={peer_relation(peer_units(0, 2), local_app_data=bag)})
    state = ctx.run(ctx.on.config_changed(), state)
    assert state.unit_status == testing.WaitingStatus(
        "waiting to be added to the cluster (2 members)"
    )
    assert not (sandbox / "var/lib/kaji/etcd/member.json").exists()
    assert list((sandbox / "var/lib/kaji/etcd/retired").iterdir())
    # The leader adds it back as a learner: it joins fresh and promotes itself.
    new_id = fake_etcd.add("etcd-1", ADDRESS, learner=True, started=False)
    members["etcd-1"] = f"https://{ADDRESS}:2380"
    bag = app_bag(ca, members, app["certificates"], **{"member-ids": {"etcd-1": f"{new_id:x}"}})
    state = testing.State(relations={peer_relation(peer_units(0, 2), local_app_data=bag)})
    state = ctx.run(ctx.on.config_changed(), state)
    assert state.unit_status == testing.ActiveStatus("healthy, 3 members, leader etcd/0")
    assert not fake_etcd.members[new_id].is_learner
    record = json.loads((sandbox / "var/lib/kaji/etcd/member.json").read_text())
    assert record["member-id"] == f"{new_id:x}"


def test_departing_unit_that_cannot_reach_etcd_keeps_its_data(
    ca: pki.CertificateAuthority, fake_etcd: FakeEtcd, sandbox: Path
) -> None:
    ctx, state = _running_unit_one(ca, fake_etcd)
    fake_etcd.reachable = False
    relation = state.get_relations("cluster")[0]
    state = ctx.run(ctx.on.relation_departed(relation, remote_unit=0, departing_unit=1), state)
    assert state.unit_status.name == "blocked"
    assert state.unit_status.message.startswith("not leaving: etcd could not be asked")
    assert (sandbox / "var/lib/kaji/etcd/member.json").exists()

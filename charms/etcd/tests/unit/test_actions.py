"""Actions: snapshot, restore, health, member-list, defrag."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from builders import (
    ADDRESS,
    FakeEtcd,
    app_bag,
    ca_secret,
    decoded,
    peer_app,
    peer_relation,
    peer_units,
    unit_context,
)
from kaji_etcd.member import JoinRecord, Member
from ops import testing

from kaji import pki


@pytest.fixture
def running(ctx: testing.Context, ca: pki.CertificateAuthority, fake_etcd: FakeEtcd):
    """The leader etcd/0 running with etcd-1 and etcd-2 (fake etcd)."""
    fake_etcd.add("etcd-0", ADDRESS)
    peers = peer_units(1, 2)
    for p in peers:
        fake_etcd.add(p.data.member_name, p.address)
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    members.update({p.data.member_name: p.data.peer_url for p in peers})
    certificates = {p.name: p.certificate(ca) for p in peers}
    relation = peer_relation(peers, local_app_data=app_bag(ca, members, certificates))
    state = testing.State(leader=True, relations={relation}, secrets={ca_secret(ca)})
    return ctx.run(ctx.on.config_changed(), state)


def test_snapshot_saves_verifies_and_describes(
    ctx: testing.Context, running: testing.State, fake_etcdctl: list, sandbox: Path
) -> None:
    ctx.run(ctx.on.action("snapshot", params={"path": "/srv/backup/etcd.db"}), running)
    results = ctx.action_results
    assert results is not None
    assert results["path"] == "/srv/backup/etcd.db"
    assert results["size"] == len(b"snapshot-bytes")
    assert results["sha256"] == hashlib.sha256(b"snapshot-bytes").hexdigest()
    assert (results["revision"], results["keys"]) == (42, 7)
    assert (sandbox / "srv/backup/etcd.db").read_bytes() == b"snapshot-bytes"
    assert fake_etcdctl[0][:2] == ("snapshot", "save")


def test_snapshot_default_path_is_on_the_data_storage(
    ctx: testing.Context, running: testing.State, fake_etcdctl: list
) -> None:
    ctx.run(ctx.on.action("snapshot"), running)
    assert ctx.action_results is not None
    assert ctx.action_results["path"].startswith("/var/lib/kaji/etcd/snapshots/etcd-etcd-0-")


def test_snapshot_refuses_relative_path(ctx: testing.Context, running: testing.State) -> None:
    with pytest.raises(testing.ActionFailed, match="absolute"):
        ctx.run(ctx.on.action("snapshot", params={"path": "backup.db"}), running)


def test_actions_refuse_when_etcd_is_only_recorded(ctx: testing.Context) -> None:
    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    for action in ("snapshot", "health", "member-list", "defrag", "restore"):
        with pytest.raises(testing.ActionFailed, match="recorded only"):
            ctx.run(ctx.on.action(action), state)


def test_health_reports_every_member_and_the_leader(
    ctx: testing.Context, running: testing.State, fake_etcd: FakeEtcd
) -> None:
    fake_etcd.unhealthy.add(fake_etcd.by_name("etcd-2").id)
    ctx.run(ctx.on.action("health"), running)
    results = ctx.action_results
    assert results is not None
    assert results["leader"] == "etcd-0"
    assert results["healthy"] == "false"
    assert results["members"]["etcd-1"]["healthy"] == "true"
    assert results["members"]["etcd-2"]["healthy"] == "false"
    assert results["members"]["etcd-0"]["client-url"] == f"https://{ADDRESS}:2379"


def test_member_list(ctx: testing.Context, running: testing.State, fake_etcd: FakeEtcd) -> None:
    import json

    ctx.run(ctx.on.action("member-list"), running)
    results = ctx.action_results
    assert results is not None
    assert results["count"] == 3
    listed = json.loads(results["members"])
    assert {m["name"] for m in listed} == {"etcd-0", "etcd-1", "etcd-2"}
    assert all(m["learner"] is False for m in listed)


def test_defrag_this_member_or_all(
    ctx: testing.Context, running: testing.State, fake_etcdctl: list
) -> None:
    ctx.run(ctx.on.action("defrag"), running)
    assert fake_etcdctl[-1] == ("defrag", f"https://{ADDRESS}:2379")
    ctx.run(ctx.on.action("defrag", params={"all": True}), running)
    assert set(fake_etcdctl[-1][1:]) == {
        f"https://{ADDRESS}:2379",
        "https://10.0.0.11:2379",
        "https://10.0.0.12:2379",
    }
    assert ctx.action_results is not None
    assert ctx.action_results["members"] == 3


def test_restore_rebuilds_the_cluster_from_the_leader(
    ctx: testing.Context,
    running: testing.State,
    fake_etcd: FakeEtcd,
    fake_etcdctl: list,
    monkeypatch: pytest.MonkeyPatch,
    sandbox: Path,
) -> None:
    restored: list[tuple[str, str]] = []

    def restore(self: Member, path: str, token: str) -> JoinRecord:
        restored.append((path, token))
        fake_etcd.members = {}
        fake_etcd.leader = None
        fake_etcd.add(self.name, self.address)
        record = JoinRecord(token, f"{self.name}={self.peer_url}", "existing")
        self.write_join_record(record)
        return record

    monkeypatch.setattr(Member, "restore", restore)
    monkeypatch.setattr(Member, "wait_healthy", lambda self, *a, **k: True)
    (sandbox / "srv").mkdir()
    (sandbox / "srv/snap.db").write_bytes(b"snapshot-bytes")
    before = decoded(peer_app(running))
    state = ctx.run(ctx.on.action("restore", params={"path": "/srv/snap.db"}), running)
    assert restored
    assert restored[0][0] == str(sandbox / "srv/snap.db")
    after = decoded(peer_app(state))
    assert after["cluster-token"] == restored[0][1] != before["cluster-token"]
    assert after["certificates"] == before["certificates"]
    assert ctx.action_results is not None
    assert ctx.action_results["revision"] == 42
    # The action only restores: the leader re-adds the others, one at a time, in the hooks
    # that follow (the others see the new token, set their data aside and say so).
    assert set(after["members"]) == {"etcd-0"}
    assert not [c for c in fake_etcd.calls if c[0] == "add"]
    relation = state.get_relations("cluster")[0]
    state = ctx.run(ctx.on.relation_changed(relation, remote_unit=1), state)
    assert [c[:2] for c in fake_etcd.calls if c[0] == "add"] == [("add", "etcd-1")]
    assert set(decoded(peer_app(state))["members"]) == {"etcd-0", "etcd-1"}


def test_restore_of_a_bad_snapshot_changes_nothing(
    ctx: testing.Context, running: testing.State, fake_etcdctl: list, sandbox: Path
) -> None:
    (sandbox / "srv").mkdir()
    (sandbox / "srv/bad.db").write_bytes(b"garbage")
    before = peer_app(running)
    with pytest.raises(testing.ActionFailed, match="not a valid snapshot"):
        ctx.run(ctx.on.action("restore", params={"path": "/srv/bad.db"}), running)
    assert (sandbox / "var/lib/kaji/etcd/member.json").exists()
    assert before == peer_app(running)


def test_restore_only_on_the_leader(ca: pki.CertificateAuthority) -> None:
    ctx = unit_context(1)
    with pytest.raises(testing.ActionFailed, match="on the leader"):
        ctx.run(
            ctx.on.action("restore", params={"path": "/srv/snap.db"}),
            testing.State(relations={peer_relation(peer_units(0))}),
        )


def test_member_that_missed_a_restore_rejoins(ca: pki.CertificateAuthority, sandbox: Path) -> None:
    """A unit whose data belongs to the pre-restore cluster sets it aside and waits."""
    ctx = unit_context(1)
    leader = peer_units(0)[0]
    members = {"etcd-0": leader.data.peer_url, "etcd-1": f"https://{ADDRESS}:2380"}
    first = ctx.run(ctx.on.install(), testing.State(relations={peer_relation([leader])}))
    import json

    csr = json.loads(first.get_relations("cluster")[0].local_unit_data["peer-csr"])
    certificates = {"etcd/1": pki.sign_csr(csr, ca, pki.Profile.PEER)}
    bag = app_bag(ca, members, certificates, token="before")
    ctx.run(ctx.on.config_changed(), testing.State(relations={peer_relation([leader], bag)}))
    (sandbox / "var/lib/kaji/etcd/data/member").mkdir(parents=True)
    bag = app_bag(ca, {"etcd-0": leader.data.peer_url}, certificates, token="after")
    state = ctx.run(
        ctx.on.config_changed(), testing.State(relations={peer_relation([leader], bag)})
    )
    assert state.unit_status == testing.WaitingStatus(
        "waiting to be added to the cluster (1 member)"
    )
    retired = list((sandbox / "var/lib/kaji/etcd/retired").iterdir())
    assert len(retired) == 1
    assert (retired[0] / "member").is_dir()

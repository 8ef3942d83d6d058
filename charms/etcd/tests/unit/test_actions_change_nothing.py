"""Every action does its own job and nothing else (issue 11, defect 2).

ops runs collect-status after an action too; the status assessment must not reconcile then.
Each test runs an action on a settled unit whose relations hold a change no hook has handled
yet (a new client's CSR, a renewed member certificate): a reconcile would act on it, an
action must not. Nothing may change on the machine, in the unit's relation data, in its
secrets, or in etcd's membership; only the snapshot action writes its snapshot file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from builders import (
    ADDRESS,
    FakeEtcd,
    app_bag,
    ca_secret,
    client_csr,
    machine_tree,
    own_csr,
    peer_relation,
    peer_units,
    relation_bags,
    secret_contents,
    unit_context,
)
from kaji_etcd.member import JoinRecord, Member
from ops import testing

from kaji import pki

#: Every action in charmcraft.yaml, with the params to run it with.
ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("health", {}),
    ("member-list", {}),
    ("defrag", {}),
    ("defrag", {"all": True}),
    ("snapshot", {}),
    ("snapshot", {"path": "/srv/backup/etcd.db"}),
    ("restore", {"path": "/srv/missing.db"}),
]
SNAPSHOTS = "var/lib/kaji/etcd/snapshots"


def _db(units: dict[int, str]) -> testing.Relation:
    return testing.Relation(
        "db",
        remote_app_name="control-plane",
        remote_units_data={n: {"client-csr": json.dumps(csr)} for n, csr in units.items()},
    )


def _settle(ctx: testing.Context, state: testing.State) -> testing.State:
    """Run hooks until one changes nothing on the machine (at most a few)."""
    for _ in range(4):
        with ctx(ctx.on.config_changed(), state) as manager:
            state = manager.run()
            if manager.charm.host.stats.files_written == 0:
                return state
    pytest.fail("the unit does not settle")


def _with_relation(state: testing.State, relation: testing.RelationBase) -> testing.State:
    others = {r for r in state.relations if r.id != relation.id}
    return dataclasses.replace(state, relations={*others, relation})


def _leader(ctx: testing.Context, ca: pki.CertificateAuthority) -> testing.State:
    """Settled leader etcd/0 of three, serving control-plane/0; control-plane/1 just asked."""
    peers = peer_units(1, 2)
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    members.update({p.data.member_name: p.data.peer_url for p in peers})
    certificates = {p.name: p.certificate(ca) for p in peers}
    relation = peer_relation(peers, local_app_data=app_bag(ca, members, certificates))
    db = _db({0: client_csr("control-plane/0")})
    state = testing.State(leader=True, relations={relation, db}, secrets={ca_secret(ca)})
    state = _settle(ctx, state)
    served = state.get_relation(db.id)
    assert "control-plane/0" in json.loads(served.local_app_data["certificates"])
    pending = dataclasses.replace(
        served,
        remote_units_data={
            **served.remote_units_data,
            1: {"client-csr": json.dumps(client_csr("control-plane/1"))},
        },
    )
    return _with_relation(state, pending)


def _follower(ca: pki.CertificateAuthority) -> tuple[testing.Context, testing.State]:
    """Settled etcd/1 of three; the leader has just published a renewed certificate for it."""
    ctx = unit_context(1)
    leader, third = peer_units(0, 2)
    members = {"etcd-0": leader.data.peer_url, "etcd-1": f"https://{ADDRESS}:2380"}
    members["etcd-2"] = third.data.peer_url
    first = ctx.run(ctx.on.install(), testing.State(relations={peer_relation([leader, third])}))
    csr = own_csr(first)
    certificates = {"etcd/1": pki.sign_csr(csr, ca, pki.Profile.PEER)}
    bag = app_bag(ca, members, certificates)
    relation = first.get_relations("cluster")[0]
    state = _settle(ctx, _with_relation(first, dataclasses.replace(relation, local_app_data=bag)))
    relation = state.get_relations("cluster")[0]
    renewed = {"etcd/1": pki.sign_csr(csr, ca, pki.Profile.PEER, validity_days=200)}
    pending = app_bag(ca, members, renewed)
    return ctx, _with_relation(state, dataclasses.replace(relation, local_app_data=pending))


@dataclasses.dataclass
class Outcome:
    state: testing.State
    stats: dict[str, int]
    failure: str | None


def _run_action(
    ctx: testing.Context, state: testing.State, name: str, params: dict[str, Any]
) -> Outcome:
    with ctx(ctx.on.action(name, params=params), state) as manager:
        try:
            out, failure = manager.run(), None
        except testing.ActionFailed as error:
            out, failure = error.state, error.message
        stats = manager.charm.host.stats.as_dict()
    assert out is not None
    return Outcome(out, stats, failure)


def _is_snapshot(path: str) -> bool:
    """The snapshot action's own output: its file and the directories it lives in."""
    return path in ("srv", "srv/backup", "srv/backup/etcd.db") or path.startswith(SNAPSHOTS)


def _assert_nothing_changed(
    before: testing.State,
    outcome: Outcome,
    tree: dict[str, Any],
    sandbox: Path,
    *,
    snapshot: bool = False,
) -> None:
    now = machine_tree(sandbox)
    new = {p for p in set(now) - set(tree) if not (snapshot and _is_snapshot(p))}
    assert not new, new
    assert {k: v for k, v in now.items() if k in tree} == tree
    stats = outcome.stats
    assert stats["services_started"] == stats["services_restarted"] == 0
    assert stats["services_stopped"] == stats["services_reloaded"] == 0
    assert stats["files_removed"] == 0
    assert relation_bags(outcome.state) == relation_bags(before)
    assert secret_contents(outcome.state) == secret_contents(before)
    assert outcome.state.unit_status == before.unit_status  # collect-status added nothing


@pytest.fixture
def live(fake_etcd: FakeEtcd, fake_etcdctl: list) -> FakeEtcd:
    """A live three-member etcd (fake) holding etcd-0 (this unit's address), etcd-1, etcd-2."""
    fake_etcd.add("etcd-0", ADDRESS)
    for p in peer_units(1, 2):
        fake_etcd.add(p.data.member_name, p.address)
    return fake_etcd


@pytest.mark.parametrize(("action", "params"), ACTIONS)
def test_action_on_the_live_leader_changes_nothing_else(
    ctx: testing.Context,
    ca: pki.CertificateAuthority,
    live: FakeEtcd,
    sandbox: Path,
    action: str,
    params: dict[str, Any],
) -> None:
    state = _leader(ctx, ca)
    tree, calls = machine_tree(sandbox), len(live.calls)
    outcome = _run_action(ctx, state, action, params)
    if action == "restore":
        assert outcome.failure is not None
        assert "restore failed" in outcome.failure
    else:
        assert outcome.failure is None, outcome.failure
    if action == "snapshot":
        assert any(_is_snapshot(p) and p not in tree for p in machine_tree(sandbox))
    _assert_nothing_changed(state, outcome, tree, sandbox, snapshot=action == "snapshot")
    assert not [c for c in live.calls[calls:] if c[0] in ("add", "remove", "promote")]
    db = outcome.state.get_relations("db")[0]
    assert "control-plane/1" not in json.loads(db.local_app_data["certificates"])


@pytest.mark.parametrize(("action", "params"), ACTIONS)
def test_action_on_a_live_follower_changes_nothing(
    ca: pki.CertificateAuthority,
    live: FakeEtcd,
    sandbox: Path,
    action: str,
    params: dict[str, Any],
) -> None:
    ctx, state = _follower(ca)
    cert = (sandbox / "etc/kaji/etcd/pki/member.crt").read_text()
    tree, calls = machine_tree(sandbox), len(live.calls)
    outcome = _run_action(ctx, state, action, params)
    if action == "restore":
        assert outcome.failure is not None
        assert "on the leader" in outcome.failure
    else:
        assert outcome.failure is None, outcome.failure
    _assert_nothing_changed(state, outcome, tree, sandbox, snapshot=action == "snapshot")
    assert not [c for c in live.calls[calls:] if c[0] in ("add", "remove", "promote")]
    assert (sandbox / "etc/kaji/etcd/pki/member.crt").read_text() == cert  # not installed


@pytest.mark.parametrize("action", sorted({a for a, _ in ACTIONS}))
@pytest.mark.parametrize("leader", [True, False])
def test_action_where_etcd_is_only_recorded_fails_and_changes_nothing(
    ctx: testing.Context, ca: pki.CertificateAuthority, sandbox: Path, action: str, leader: bool
) -> None:
    if leader:
        state = _leader(ctx, ca)
    else:
        ctx, state = _follower(ca)
    tree = machine_tree(sandbox)
    outcome = _run_action(ctx, state, action, {})
    assert outcome.failure is not None
    if leader or action != "restore":
        assert "recorded only" in outcome.failure
    _assert_nothing_changed(state, outcome, tree, sandbox)


def test_restore_changes_only_what_it_restores(
    ctx: testing.Context,
    ca: pki.CertificateAuthority,
    live: FakeEtcd,
    sandbox: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its job is the leader's data and the peer membership: not clients, not certificates."""

    def restore(self: Member, path: str, token: str) -> JoinRecord:
        live.members, live.leader = {}, None
        live.add(self.name, self.address)
        record = JoinRecord(token, f"{self.name}={self.peer_url}", "existing")
        self.write_join_record(record)
        return record

    monkeypatch.setattr(Member, "restore", restore)
    monkeypatch.setattr(Member, "wait_healthy", lambda self, *a, **k: True)
    state = _leader(ctx, ca)
    (sandbox / "srv").mkdir()
    (sandbox / "srv/snap.db").write_bytes(b"snapshot-bytes")
    calls = len(live.calls)
    outcome = _run_action(ctx, state, "restore", {"path": "/srv/snap.db"})
    assert outcome.failure is None
    before, after = relation_bags(state), relation_bags(outcome.state)
    assert after[state.get_relations("db")[0].id] == before[state.get_relations("db")[0].id]
    peer = state.get_relations("cluster")[0].id
    assert after[peer]["unit"] == before[peer]["unit"]
    old, new = before[peer]["app"], after[peer]["app"]
    changed = {k for k in {*old, *new} if old.get(k) != new.get(k)}
    assert "cluster-token" in changed
    assert changed <= {"cluster-token", "members", "member-ids"}  # certificates kept
    assert secret_contents(outcome.state) == secret_contents(state)
    # Re-adding the other members is the next hooks' work, not the action's.
    assert not [c for c in live.calls[calls:] if c[0] in ("add", "remove", "promote")]

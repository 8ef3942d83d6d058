"""A departing leader never shrinks application data (issue 11, defect 3).

Juju keeps a unit that is being removed leader through its own relation-departed,
relation-broken, stop and remove hooks, and names it as the departing unit
(``JUJU_DEPARTING_UNIT``) in each relation-departed, while its view of the remote units
shrinks by one per hook (juju/juju worker/uniter/relation/resolver.go: the departee is the
local unit when it is not alive; worker/uniter/leadership/resolver.go: a dying unit only
resigns locally, the lease stays). These tests remove the etcd leader in that order and check
that no survivor's certificate, and no survivor's service, changes; then the next leader takes
over without reissuing anything.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import FakeEtcd, client_csr, unit_context
from ops import testing
from scenario import _runtime

from kaji.host import RecordingManager

PEER_ID, DB_ID = 3, 7
#: Makes the event to run from the context and the state's relations (by endpoint).
Event = Callable[[testing.Context, dict[str, testing.RelationBase]], Any]
CLIENTS = ("control-plane/0", "control-plane/1")


def _address(n: int) -> str:
    return f"10.0.0.{10 + n}"


def _juju_keys(address: str) -> dict[str, str]:
    return {"ingress-address": address, "private-address": address, "egress-subnets": address}


@dataclasses.dataclass
class Unit:
    """One etcd unit on a sandboxed machine of its own."""

    n: int
    root: Path
    monkeypatch: pytest.MonkeyPatch
    state: testing.State | None = None

    @property
    def name(self) -> str:
        return f"etcd/{self.n}"

    def run(self, event: Event, state: testing.State) -> testing.State:
        self.monkeypatch.setenv("KAJI_HOST_ROOT", str(self.root))
        self.monkeypatch.setenv("KAJI_HOST_HOSTNAME", f"machine-{self.n}")
        ctx = unit_context(self.n)
        relations = {r.endpoint: r for r in state.relations}
        self.state = ctx.run(event(ctx, relations), state)
        return self.state

    def network(self) -> testing.Network:
        address = testing.Address(_address(self.n))
        return testing.Network(
            "cluster",
            bind_addresses=[testing.BindAddress([address])],
            ingress_addresses=[_address(self.n)],
        )

    def own_bag(self) -> dict[str, str]:
        if self.state is None or not self.state.get_relations("cluster"):
            return _juju_keys(_address(self.n))
        bag = dict(self.state.get_relations("cluster")[0].local_unit_data)
        return {**bag, **_juju_keys(_address(self.n))}

    def service(self) -> dict[str, int | bool]:
        return RecordingManager(self.root / "var/lib/kaji/services").record("etcd")


class Cluster:
    """Three etcd units and two control-plane clients, exchanged as Juju would."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.units = []
        for n in range(3):
            root = tmp_path / f"machine-{n}"
            root.mkdir()
            self.units.append(Unit(n, root, monkeypatch))
        self.app: dict[str, str] = {}
        self.db_app: dict[str, str] = {}
        self.secrets: frozenset[testing.Secret] = frozenset()
        self.clients = {
            n: {"client-csr": json.dumps(client_csr(c))} for n, c in enumerate(CLIENTS)
        }
        self.leader = 0

    def peer(self, unit: Unit, present: set[int] | None = None) -> testing.PeerRelation:
        others = {u.n for u in self.units if u is not unit} if present is None else present
        return testing.PeerRelation(
            "cluster",
            id=PEER_ID,
            local_app_data=dict(self.app),
            local_unit_data=unit.own_bag(),
            peers_data={m: self.units[m].own_bag() for m in sorted(others)},
        )

    def db(self, present: set[int] | None = None) -> testing.Relation:
        units = set(self.clients) if present is None else present
        return testing.Relation(
            "db",
            id=DB_ID,
            remote_app_name="control-plane",
            local_app_data=dict(self.db_app),
            remote_units_data={
                n: {**self.clients[n], **_juju_keys(f"10.1.0.{n}")} for n in sorted(units)
            },
        )

    def state(self, unit: Unit, relations: set[testing.RelationBase]) -> testing.State:
        return testing.State(
            leader=unit.n == self.leader,
            relations=relations,
            secrets=self.secrets,
            networks={unit.network()},
        )

    def hook(self, unit: Unit, event: Event, **views: Any) -> None:
        """Run one hook on `unit`; its view of the relations is `views` (default: all)."""
        relations: set[testing.RelationBase] = {self.peer(unit, views.get("peers"))}
        if views.get("db", ()) is not None and (unit.n == self.leader or "db" in views):
            relations.add(self.db(views.get("db")))
        out = unit.run(event, self.state(unit, relations))
        if unit.n == self.leader:
            self.app = dict(out.get_relation(PEER_ID).local_app_data)
            if out.get_relations("db"):
                self.db_app = dict(out.get_relation(DB_ID).local_app_data)
            self.secrets = frozenset(out.secrets)

    def settle(self) -> None:
        for unit in self.units:
            self.hook(unit, lambda ctx, _: ctx.on.install())
        for _ in range(3):
            for unit in self.units:
                self.hook(unit, lambda ctx, _: ctx.on.config_changed())


@pytest.fixture
def departing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Name the local unit as the departing one in relation-departed hooks.

    ops.testing spells ``JUJU_DEPARTING_UNIT`` as ``<remote app>/<id>`` (and treats id 0 as
    unset), so it cannot say that the local unit of a non-peer relation departs; Juju can.
    Append the local unit's name to the returned list to have the next hook say so.
    """
    names: list[str] = []
    original = _runtime.Runtime._get_event_env

    def get_env(self: Any, state: Any, event: Any, charm_root: Any) -> dict[str, str]:
        env = original(self, state, event, charm_root)
        if names and event.name.endswith("_relation_departed"):
            env["JUJU_DEPARTING_UNIT"] = names[-1]
        return env

    monkeypatch.setattr(_runtime.Runtime, "_get_event_env", get_env)
    return names


#: The dying leader's hooks, in orders Juju may pick (relations are visited in map order).
ORDERS = {
    "peers-first": ["peer:1", "peer:2", "db:0", "db:1", "db-broken", "stop", "remove"],
    "db-first": ["db:0", "db:1", "db-broken", "peer:1", "peer:2", "stop", "remove"],
    "interleaved": ["peer:2", "db:1", "peer:1", "db:0", "db-broken", "stop", "remove"],
}


def _remove_the_leader(cluster: Cluster, departing: list[str], order: list[str]) -> None:
    leader = cluster.units[0]
    peers, db = {1, 2}, {0, 1}
    departing.append(leader.name)
    before = (dict(cluster.app), dict(cluster.db_app))
    gone = False  # the db relation, once broken
    for step in order:
        kind, _, arg = step.partition(":")
        event: Event
        if kind in ("peer", "db"):
            (peers if kind == "peer" else db).discard(int(arg))
            endpoint = "cluster" if kind == "peer" else "db"
            event = lambda ctx, r, e=endpoint, n=int(arg): ctx.on.relation_departed(  # noqa: E731
                r[e], remote_unit=n
            )
        elif kind == "db-broken":
            event = lambda ctx, r: ctx.on.relation_broken(r["db"])  # noqa: E731
        else:
            event = lambda ctx, r, k=kind: getattr(ctx.on, k)()  # noqa: E731
        cluster.hook(leader, event, peers=set(peers), db=None if gone else set(db))
        gone |= kind == "db-broken"
        assert leader.state is not None
        # Still leader, and the application data is exactly what it was.
        assert (cluster.app, cluster.db_app) == before, step
    departing.clear()


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_departing_recorded_leader_keeps_every_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, departing: list[str], order: str
) -> None:
    cluster = Cluster(tmp_path, monkeypatch)
    cluster.settle()
    certificates = json.loads(cluster.app["certificates"])
    assert set(certificates) == {"etcd/0", "etcd/1", "etcd/2"}
    assert set(json.loads(cluster.db_app["certificates"])) == set(CLIENTS)
    services = {u.n: u.service() for u in cluster.units[1:]}
    assert all(s["running"] for s in services.values())

    _remove_the_leader(cluster, departing, ORDERS[order])
    leaving = cluster.units[0].state
    assert leaving is not None
    assert leaving.unit_status.name == "maintenance"

    # The next leader (Juju elects one once etcd/0 is gone) keeps every certificate.
    cluster.leader = 1
    db_before = json.loads(cluster.db_app["certificates"])
    cluster.hook(cluster.units[1], lambda ctx, _: ctx.on.leader_elected(), peers={2})
    after = json.loads(cluster.app["certificates"])
    assert after == {u: c for u, c in certificates.items() if u != "etcd/0"}
    assert json.loads(cluster.db_app["certificates"]) == db_before
    assert set(json.loads(cluster.app["members"])) == {"etcd-1", "etcd-2"}
    for unit in cluster.units[1:]:
        others = {1, 2} - {unit.n}
        cluster.hook(unit, lambda ctx, r: ctx.on.relation_changed(r["cluster"]), peers=others)
        assert unit.service() == services[unit.n]  # no survivor restarted


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_departing_live_leader_keeps_every_certificate_and_member(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    departing: list[str],
    fake_etcd: FakeEtcd,
    order: str,
) -> None:
    for n in range(3):
        fake_etcd.add(f"etcd-{n}", _address(n))
    cluster = Cluster(tmp_path, monkeypatch)
    cluster.settle()
    assert set(json.loads(cluster.app["certificates"])) == {"etcd/0", "etcd/1", "etcd/2"}
    calls = len(fake_etcd.calls)
    _remove_the_leader(cluster, departing, ORDERS[order])
    changes = [c for c in fake_etcd.calls[calls:] if c[0] in ("add", "remove", "promote")]
    assert [c[0] for c in changes] == ["remove"]  # only its own member, once
    assert {m.name for m in fake_etcd.members.values()} == {"etcd-1", "etcd-2"}


def test_a_unit_that_knows_it_is_leaving_never_writes_application_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, departing: list[str]
) -> None:
    """After its first own departure, even hooks that would reconcile leave the data alone."""
    cluster = Cluster(tmp_path, monkeypatch)
    cluster.settle()
    leader = cluster.units[0]
    departing.append(leader.name)
    cluster.hook(leader, lambda ctx, r: ctx.on.relation_departed(r["db"], remote_unit=0), db={1})
    departing.clear()
    before = (dict(cluster.app), dict(cluster.db_app))
    # A new client asks, a peer changes: a leader would sign and rewrite; a leaving one not.
    cluster.clients[2] = {"client-csr": json.dumps(client_csr("control-plane/2"))}
    events: list[Event] = [
        lambda ctx, r: ctx.on.relation_changed(r["db"], remote_unit=2),
        lambda ctx, _: ctx.on.update_status(),
        lambda ctx, _: ctx.on.config_changed(),
    ]
    for event in events:
        cluster.hook(leader, event, peers={2}, db={1, 2})
        assert (cluster.app, cluster.db_app) == before
    assert (leader.root / "var/lib/kaji/etcd/leaving").exists()


def test_a_leaving_marker_of_an_earlier_unit_is_ignored(
    ctx: testing.Context, sandbox: Path
) -> None:
    """The data storage (or machine) of a removed unit may come back under another unit."""
    marker = sandbox / "var/lib/kaji/etcd/leaving"
    marker.parent.mkdir(parents=True)
    marker.write_text("etcd/7\n")
    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    assert state.unit_status == testing.ActiveStatus(
        "1 member (etcd not running on this machine: recorded only)"
    )
    assert json.loads(state.get_relations("cluster")[0].local_app_data["members"])


def test_restore_is_refused_on_a_leaving_leader(
    ctx: testing.Context, sandbox: Path, departing: list[str]
) -> None:
    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    state = ctx.run(ctx.on.stop(), state)
    assert (sandbox / "var/lib/kaji/etcd/leaving").read_text() == "etcd/0\n"
    with pytest.raises(testing.ActionFailed, match="being removed"):
        ctx.run(ctx.on.action("restore", params={"path": "/srv/snap.db"}), state)

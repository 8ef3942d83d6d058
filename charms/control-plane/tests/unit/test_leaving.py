"""A unit being removed (leader or not) never shrinks the application's data.

Juju keeps a unit that is being removed as leader through its own relation-departed,
relation-broken, stop and remove hooks, and in each of its relation-departed hooks its view of
the remote units shrinks (canonical/operator#707; juju/juju#20924 revokes leadership only once
the unit is gone). A leader that took that view for the cluster would drop every other unit's
certificates and every worker's node certificate.
"""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from builders import (
    CONTEXT_ROOT,
    Cluster,
    base_state,
    databags,
    depart_as,
    peer_bag,
    with_relation,
    worker_bag,
)
from ops import testing

from charm import ControlPlaneCharm
from kaji.interfaces import control_plane_peers as peers
from kaji.interfaces import kube_control as kc

ME = "control-plane/2"


@pytest.fixture
def leader(root: pathlib.Path, tmp_path: pathlib.Path, etcd_side) -> tuple[Cluster, testing.State]:
    """control-plane/2, the leader of three, with two workers; everything signed."""
    ctx = testing.Context(
        ControlPlaneCharm, charm_root=CONTEXT_ROOT, app_name="control-plane", unit_id=2
    )
    bags = {}
    for n, address in ((0, "10.0.0.2"), (1, "10.0.0.3")):
        bags[n], _ = peer_bag(tmp_path / f"cp{n}", f"cp-{n}", [address])
    peer = testing.PeerRelation("cluster", peers_data=bags)
    kube = testing.Relation(
        "kube-control",
        remote_app_name="worker",
        remote_units_data={0: worker_bag("w0", ["10.0.1.5"]), 1: worker_bag("w1", ["10.0.1.6"])},
    )
    cluster = Cluster(ctx, etcd_side)
    state = cluster.converge(base_state(relations=[peer, kube]))
    app = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert app is not None
    assert set(app.certificates) == {
        "control-plane/0",
        "control-plane/1",
        ME,
    }
    provider = kc.read_provider_app(state.get_relations("kube-control")[0].local_app_data)
    assert provider is not None
    assert set(provider.certificates) == {"worker/0", "worker/1"}
    return cluster, state


def _app_bags(state: testing.State) -> dict[str, dict[str, str]]:
    return {k: v["local-app"] for k, v in databags(state).items()}


def _without_peer(state: testing.State, unit_id: int) -> tuple[testing.State, testing.Relation]:
    rel = state.get_relations("cluster")[0]
    shrunk = dataclasses.replace(
        rel, peers_data={k: v for k, v in rel.peers_data.items() if k != unit_id}
    )
    return with_relation(state, shrunk), shrunk


def _without_worker(state: testing.State, unit_id: int) -> tuple[testing.State, testing.Relation]:
    rel = state.get_relations("kube-control")[0]
    shrunk = dataclasses.replace(
        rel, remote_units_data={k: v for k, v in rel.remote_units_data.items() if k != unit_id}
    )
    return with_relation(state, shrunk), shrunk


def test_leaving_leader_keeps_the_peer_data_through_its_peer_departed(leader) -> None:
    cluster, state = leader
    view, shrunk = _without_peer(state, 1)
    out = cluster.ctx.run(
        cluster.ctx.on.relation_departed(shrunk, remote_unit=1, departing_unit=2), view
    )
    assert _app_bags(out) == _app_bags(state)
    assert out.unit_status.name == "maintenance"
    assert out.unit_status.message.startswith("leaving")


def test_leaving_leader_keeps_the_workers_certificates_through_kube_control_departed(
    leader, monkeypatch, kubectl
) -> None:
    cluster, state = leader
    depart_as(monkeypatch, ME)
    view, shrunk = _without_worker(state, 1)
    out = cluster.ctx.run(
        cluster.ctx.on.relation_departed(shrunk, remote_unit=1, departing_unit=1), view
    )
    assert _app_bags(out) == _app_bags(state)
    assert not [c for c in kubectl.calls() if "delete" in c]  # w1's worker is not gone


def test_leaving_stays_leaving_through_broken_stop_remove_and_update_status(
    leader, monkeypatch, kubectl
) -> None:
    """The whole removal, in Juju's order, each hook seeing less: app data never changes."""
    cluster, state = leader
    ctx = cluster.ctx
    view, shrunk = _without_peer(state, 0)
    out = ctx.run(ctx.on.relation_departed(shrunk, remote_unit=0, departing_unit=2), view)
    view, shrunk = _without_peer(out, 1)
    out = ctx.run(ctx.on.relation_departed(shrunk, remote_unit=1, departing_unit=2), view)
    out = ctx.run(ctx.on.relation_broken(out.get_relations("cluster")[0]), out)
    depart_as(monkeypatch, ME)
    for worker in (0, 1):
        view, shrunk = _without_worker(out, worker)
        out = ctx.run(
            ctx.on.relation_departed(shrunk, remote_unit=worker, departing_unit=worker), view
        )
    out = ctx.run(ctx.on.relation_broken(out.get_relations("kube-control")[0]), out)
    out = ctx.run(ctx.on.update_status(), out)  # a timer firing mid-removal
    out = ctx.run(ctx.on.stop(), out)
    out = ctx.run(ctx.on.remove(), out)
    assert _app_bags(out) == _app_bags(state)
    assert not [c for c in kubectl.calls() if "delete" in c]
    assert out.unit_status.message.startswith("leaving")


def test_leaving_leader_in_its_peer_broken_hook_writes_nothing(leader) -> None:
    cluster, state = leader
    out = cluster.ctx.run(cluster.ctx.on.relation_broken(state.get_relations("cluster")[0]), state)
    assert _app_bags(out) == _app_bags(state)


def test_another_unit_leaving_still_drops_its_certificates(leader) -> None:
    """The guard is about this unit leaving: a departed peer loses its certificates."""
    cluster, state = leader
    view, shrunk = _without_peer(state, 1)
    out = cluster.ctx.run(
        cluster.ctx.on.relation_departed(shrunk, remote_unit=1, departing_unit=1), view
    )
    app = peers.read_peer_app(out.get_relations("cluster")[0].local_app_data)
    assert app is not None
    assert set(app.certificates) == {"control-plane/0", ME}

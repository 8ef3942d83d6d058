"""Cluster setup (RBAC bindings, CoreDNS) and deleting departed workers' Nodes, as the leader.

Both go through kubectl as the admin. Until they succeed the leader says what is pending and
why, is not active, and every update-status retries (the cheap update-status never takes a
pending reconcile for settled).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest
from builders import FakeKubectl, base_state, with_relation, worker_bag
from kaji_control_plane import literals
from kaji_control_plane.pki import node_name_claimed
from ops import testing

import charm
from kaji.interfaces import control_plane_peers as peers

APPLY = (
    "apply --server-side --force-conflicts --field-manager=kaji-control-plane"
    " -f {root}/etc/kubernetes/manifests/coredns.yaml"
    " -f {root}/etc/kubernetes/manifests/rbac.yaml"
)


@pytest.fixture
def reconciles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = charm.ControlPlaneCharm.reconcile

    def counting(self: charm.ControlPlaneCharm) -> None:
        calls.append("reconcile")
        original(self)

    monkeypatch.setattr(charm.ControlPlaneCharm, "reconcile", counting)
    return calls


def _applies(kubectl: FakeKubectl) -> list[str]:
    return [c for c in kubectl.calls() if " apply " in f" {c} "]


def _deletes(kubectl: FakeKubectl) -> list[str]:
    return [c.split(" delete ", 1)[1] for c in kubectl.calls() if " delete " in c]


def test_setup_is_applied_server_side_once(cluster, root: pathlib.Path, kubectl) -> None:
    state = cluster.converge(base_state())
    assert state.unit_status == testing.ActiveStatus(
        "API https://192.0.2.0:6443 (1 control plane)"
    )
    (apply,) = _applies(kubectl)
    assert apply.endswith(APPLY.format(root=root))
    assert "--kubeconfig " + str(root / "etc/kubernetes/admin.conf") in apply
    cluster.ctx.run(cluster.ctx.on.config_changed(), state)  # a full reconcile, nothing new
    assert len(_applies(kubectl)) == 1


def test_setup_pending_waits_and_every_update_status_retries(
    cluster, kubectl, reconciles: list[str]
) -> None:
    kubectl.api(False)
    state = cluster.converge(base_state())
    assert state.unit_status == testing.WaitingStatus(
        "waiting for the API to apply the RBAC bindings and CoreDNS (API not ready: The"
        " connection to the server 192.0.2.0:6443 was refused - did you specify the right host"
        " or port?)"
    )
    probes = len(kubectl.calls())
    reconciles.clear()
    state = cluster.ctx.run(cluster.ctx.on.update_status(), state)  # nothing else changed
    assert reconciles == ["reconcile"]  # not remembered as settled
    assert len(kubectl.calls()) == probes + 1  # probed again
    assert state.unit_status.name == "waiting"
    kubectl.api(True)
    state = cluster.ctx.run(cluster.ctx.on.update_status(), state)
    assert state.unit_status.name == "active"
    assert len(_applies(kubectl)) == 1
    reconciles.clear()
    cluster.ctx.run(cluster.ctx.on.update_status(), state)
    assert reconciles == []  # settled now: the cheap update-status again


def test_changed_manifests_are_applied_again(cluster, kubectl) -> None:
    state = cluster.converge(base_state())
    changed = dataclasses.replace(state, config={"image-registry": "mirror.example/k8s"})
    cluster.ctx.run(cluster.ctx.on.config_changed(), changed)
    assert len(_applies(kubectl)) == 2


def test_non_leader_applies_nothing(ctx, kubectl) -> None:
    ctx.run(ctx.on.update_status(), base_state(leader=False))
    assert kubectl.calls() == []


# ----------------------------------------------------------------------------- departed workers


def _with_workers(cluster, *names: str) -> testing.State:
    workers = {n: worker_bag(name, [f"10.0.1.{5 + n}"]) for n, name in enumerate(names)}
    kube = testing.Relation("kube-control", remote_app_name="worker", remote_units_data=workers)
    return cluster.converge(base_state(relations=[kube]))


def _depart(cluster, state: testing.State, unit_id: int) -> testing.State:
    rel = state.get_relations("kube-control")[0]
    shrunk = dataclasses.replace(
        rel, remote_units_data={k: v for k, v in rel.remote_units_data.items() if k != unit_id}
    )
    return cluster.ctx.run(
        cluster.ctx.on.relation_departed(shrunk, remote_unit=unit_id, departing_unit=unit_id),
        with_relation(state, shrunk),
    )


def _departed_nodes(state: testing.State) -> tuple[str, ...]:
    app = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert app is not None
    return app.departed_nodes


def test_a_departed_workers_node_is_deleted(cluster, kubectl) -> None:
    state = _with_workers(cluster, "w0", "w1")
    assert _deletes(kubectl) == []
    state = _depart(cluster, state, 1)
    assert _deletes(kubectl) == ["node w1 --ignore-not-found"]
    assert _departed_nodes(state) == ()
    assert state.unit_status.name == "active"
    cluster.ctx.run(cluster.ctx.on.config_changed(), state)
    assert _deletes(kubectl) == ["node w1 --ignore-not-found"]  # done: not again


def test_node_deletion_waits_for_the_api_and_is_retried(
    cluster, kubectl, reconciles: list[str]
) -> None:
    state = _with_workers(cluster, "w0", "w1")
    kubectl.api(False)
    state = _depart(cluster, state, 1)
    assert state.unit_status.name == "waiting"
    assert state.unit_status.message.startswith(
        "waiting for the API to delete the Node of departed workers: w1 (API not ready:"
    )
    assert _departed_nodes(state) == ("w1",)  # kept for a later hook, or a later leader
    reconciles.clear()
    state = cluster.ctx.run(cluster.ctx.on.update_status(), state)
    assert reconciles == ["reconcile"]
    kubectl.api(True)
    state = cluster.ctx.run(cluster.ctx.on.update_status(), state)
    assert _deletes(kubectl) == ["node w1 --ignore-not-found"]
    assert _departed_nodes(state) == ()
    assert state.unit_status.name == "active"


def test_a_node_whose_worker_is_present_is_never_deleted(cluster, kubectl) -> None:
    """worker/1 leaves, but worker/2 (same machine name, say) claims node w1: keep it."""
    state = _with_workers(cluster, "w0", "w1")
    rel = state.get_relations("kube-control")[0]
    units = {0: rel.remote_units_data[0], 2: worker_bag("w1", ["10.0.1.9"])}
    shrunk = dataclasses.replace(rel, remote_units_data=units)
    state = cluster.ctx.run(
        cluster.ctx.on.relation_departed(shrunk, remote_unit=1, departing_unit=1),
        with_relation(state, shrunk),
    )
    assert _deletes(kubectl) == []
    assert _departed_nodes(state) == ()


def test_a_later_leader_deletes_what_the_last_one_could_not(
    cluster, kubectl, root: pathlib.Path
) -> None:
    state = _with_workers(cluster, "w0")
    peer = state.get_relations("cluster")[0]
    app = dict(peer.local_app_data)
    app["departed-nodes"] = json.dumps(["w7"])
    state = with_relation(state, dataclasses.replace(peer, local_app_data=app))
    (root / literals.STATE_DIR.lstrip("/") / "reconciled.json").unlink()  # as on another unit
    state = cluster.ctx.run(cluster.ctx.on.leader_elected(), state)
    assert _deletes(kubectl) == ["node w7 --ignore-not-found"]
    assert _departed_nodes(state) == ()


def test_in_a_recording_sandbox_deletion_is_recorded(cluster, caplog) -> None:
    state = _with_workers(cluster, "w0", "w1")
    state = _depart(cluster, state, 1)
    assert _departed_nodes(state) == ()
    assert "recorded only (sandbox): deleting Nodes w1" in caplog.text
    assert state.unit_status.name == "active"


@pytest.mark.parametrize("value", ["[" * 3000, '"w1', "{}", '["w1"]', "A" * 70_000])
def test_a_hostile_node_name_claims_nothing_and_breaks_nothing(value: str) -> None:
    assert node_name_claimed({"node-name": value}) is None
    assert node_name_claimed({"node-name": '"w1"', "kubelet-csr": "A" * 70_000}) == "w1"

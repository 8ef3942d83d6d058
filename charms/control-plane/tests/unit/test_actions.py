"""Actions: get-kubeconfig and restart do their own job and change nothing else."""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib

import pytest
import yaml
from builders import (
    CHARM_ROOT,
    base_state,
    databags,
    secrets_of,
    snapshot,
    with_relation,
    worker_bag,
)
from ops import testing

import charm
from kaji import pki
from kaji.host import RecordingManager

ACTIONS = sorted(yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())["actions"])
SERVICES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _settled(cluster) -> testing.State:
    kube = testing.Relation(
        "kube-control",
        remote_app_name="worker",
        remote_units_data={0: worker_bag("w0", ["10.0.1.5"])},
    )
    state = cluster.converge(base_state(relations=[kube]))
    assert state.unit_status.name == "active"
    return state


def _with_unprocessed_worker(state: testing.State) -> testing.State:
    """A new worker's CSR is in the relation data, but no hook has run for it yet.

    Juju runs actions between hooks, so an action sees data its reconcile has not acted on:
    a reconcile there would sign the CSR (and restart, apply, ...).
    """
    rel = state.get_relations("kube-control")[0]
    units = {**rel.remote_units_data, 1: worker_bag("w1", ["10.0.1.6"])}
    return with_relation(state, dataclasses.replace(rel, remote_units_data=units))


@pytest.mark.parametrize("unprocessed", [False, True], ids=["settled", "change-pending"])
@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_changes_only_what_it_is_for(
    cluster, root: pathlib.Path, monkeypatch, action: str, unprocessed: bool
) -> None:
    state = _settled(cluster)
    if unprocessed:
        state = _with_unprocessed_worker(state)
    monkeypatch.setattr(
        charm.ControlPlaneCharm, "reconcile", lambda self: pytest.fail("reconciled in an action")
    )
    # restart's job is the services: their records are the only thing it may change.
    skip = ("var/lib/kaji/services",) if action == "restart" else ()
    files = snapshot(root, skip=skip)
    rm = RecordingManager(root / "var/lib/kaji/services")
    records = {name: rm.record(name) for name in SERVICES}
    with cluster.ctx(cluster.ctx.on.action(action), state) as manager:
        out = manager.run()
        stats = manager.charm.host.stats
    assert stats.files_written == stats.files_removed == 0
    assert snapshot(root, skip=skip) == files
    assert databags(out) == databags(state)
    assert secrets_of(out) == secrets_of(state)
    assert out.opened_ports == state.opened_ports
    assert out.unit_status == state.unit_status  # collect-status adds nothing after an action
    for name in SERVICES:
        expected = dict(records[name])
        if action == "restart":
            expected["starts"] = int(expected["starts"]) + 1  # stopped and started once
        assert rm.record(name) == expected, name


def test_get_kubeconfig_targets_the_loadbalancer(cluster, root: pathlib.Path) -> None:
    state = cluster.converge(base_state(config={"loadbalancer-address": "api.example.com"}))
    cluster.ctx.run(cluster.ctx.on.action("get-kubeconfig"), state)
    config = json.loads(cluster.ctx.action_results["kubeconfig"])
    assert config["clusters"][0]["cluster"]["server"] == "https://api.example.com:6443"
    user = config["users"][0]["user"]
    key = base64.b64decode(user["client-key-data"]).decode()
    cert = base64.b64decode(user["client-certificate-data"]).decode()
    assert key == (root / "etc/kubernetes/pki/admin.key").read_text()  # made on this unit
    info = pki.read_certificate(cert)
    assert (info.identity.common_name, info.identity.organizations) == (
        "kubernetes-admin",
        frozenset({"system:masters"}),
    )


def test_get_kubeconfig_defaults_to_the_unit_address(cluster) -> None:
    state = cluster.converge(base_state())
    cluster.ctx.run(cluster.ctx.on.action("get-kubeconfig"), state)
    config = json.loads(cluster.ctx.action_results["kubeconfig"])
    assert config["clusters"][0]["cluster"]["server"] == "https://192.0.2.0:6443"


def test_get_kubeconfig_uses_the_public_address_when_juju_has_one(cluster, public_address) -> None:
    public_address("203.0.113.10")
    state = cluster.converge(base_state())
    cluster.ctx.run(cluster.ctx.on.action("get-kubeconfig"), state)
    config = json.loads(cluster.ctx.action_results["kubeconfig"])
    assert config["clusters"][0]["cluster"]["server"] == "https://203.0.113.10:6443"


def test_get_kubeconfig_fails_before_certificates(ctx) -> None:
    with pytest.raises(testing.ActionFailed, match="admin certificate is not installed"):
        ctx.run(ctx.on.action("get-kubeconfig"), base_state(leader=False))


def test_restart_restarts_every_service(cluster, root: pathlib.Path) -> None:
    state = cluster.converge(base_state())
    cluster.ctx.run(cluster.ctx.on.action("restart"), state)
    assert cluster.ctx.action_results == {
        "restarted": "kube-apiserver,kube-controller-manager,kube-scheduler"
    }
    rm = RecordingManager(root / "var/lib/kaji/services")
    for name in SERVICES:
        assert rm.record(name) == {"running": True, "starts": 2, "restarts": 0, "reloads": 0}


def test_restart_fails_when_nothing_is_set_up(ctx) -> None:
    with pytest.raises(testing.ActionFailed, match="no control-plane service"):
        ctx.run(ctx.on.action("restart"), testing.State(leader=False))

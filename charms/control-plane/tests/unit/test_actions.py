"""Actions: get-kubeconfig and restart."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest
from conftest import base_state
from ops import testing

from kaji import pki
from kaji.host import RecordingManager


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
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert rm.record(name) == {"running": True, "starts": 2, "restarts": 0, "reloads": 0}


def test_restart_fails_when_nothing_is_set_up(ctx) -> None:
    with pytest.raises(testing.ActionFailed, match="no control-plane service"):
        ctx.run(ctx.on.action("restart"), testing.State(leader=False))

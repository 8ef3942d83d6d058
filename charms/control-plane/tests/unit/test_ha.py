"""HA: three control-plane units; the leader signs for all; every unit serves and is published."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from builders import CONTEXT_ROOT, Cluster, base_state, peer_bag, with_relation
from ops import testing

from charm import ControlPlaneCharm
from kaji import pki
from kaji.interfaces import control_plane_peers as peers
from kaji.interfaces import kube_control as kc


def _three_unit_leader(cluster, tmp_path: pathlib.Path):
    bags = {}
    hosts = {}
    for n, address in ((1, "10.0.0.2"), (2, "10.0.0.3")):
        bags[n], hosts[n] = peer_bag(tmp_path / f"cp{n}", f"cp-{n}", [address])
    peer = testing.PeerRelation("cluster", peers_data=bags)
    kube = testing.Relation("kube-control", remote_app_name="worker")
    return cluster.converge(base_state(relations=[peer, kube])), hosts


def test_leader_signs_every_unit_and_counts_three(cluster, tmp_path: pathlib.Path) -> None:
    state, hosts = _three_unit_leader(cluster, tmp_path)
    app = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert app is not None
    assert set(app.certificates) == {"control-plane/0", "control-plane/1", "control-plane/2"}
    for n in (1, 2):
        cert = app.certificates_for(f"control-plane/{n}")["apiserver"]
        info = pki.read_certificate(cert)
        assert f"cp-{n}" in info.identity.dns_names
        assert f"10.0.0.{n + 1}" in info.identity.ip_addresses
        assert pki.cert_matches_key(cert, hosts[n].read_text("/etc/kubernetes/pki/apiserver.key"))
    assert state.unit_status.message.startswith("API https://192.0.2.0:6443 (3 control planes)")


def test_non_leader_installs_what_the_leader_signed(
    cluster, tmp_path: pathlib.Path, monkeypatch
) -> None:
    """Unit 1's view: it reads the app secrets, sends CSRs, installs its signed certificates."""
    leader_state, _ = _three_unit_leader(cluster, tmp_path)
    # control-plane/1 runs in the sandbox that made its keys (tmp_path/cp1).
    monkeypatch.setenv("KAJI_HOST_ROOT", str(tmp_path / "cp1"))
    monkeypatch.setenv("KAJI_HOST_HOSTNAME", "cp-1")
    leader_peer = leader_state.get_relations("cluster")[0]
    bag1 = dict(leader_peer.peers_data[1])
    peer = testing.PeerRelation(
        "cluster",
        local_app_data=dict(leader_peer.local_app_data),
        local_unit_data=bag1,
        peers_data={0: dict(leader_peer.local_unit_data), 2: dict(leader_peer.peers_data[2])},
    )
    etcd_rel = leader_state.get_relations("etcd")[0]
    network = testing.Network(
        "cluster",
        bind_addresses=[testing.BindAddress([testing.Address("10.0.0.2")])],
        ingress_addresses=["10.0.0.2"],
    )
    kc_network = dataclasses.replace(network, binding_name="kube-control")
    state = testing.State(
        leader=False,
        relations={
            peer,
            dataclasses.replace(etcd_rel, local_unit_data={}, remote_app_data={}),
            *(r for r in leader_state.relations if r.endpoint in ("cni", "kube-control")),
        },
        secrets=leader_state.secrets,
        networks={network, kc_network},
    )
    ctx = testing.Context(
        ControlPlaneCharm, charm_root=CONTEXT_ROOT, app_name="control-plane", unit_id=1
    )
    unit1 = Cluster(ctx, cluster.etcd).converge(state)
    assert unit1.unit_status.message.startswith("API https://10.0.0.2:6443 (3 control planes)")
    pki_dir = tmp_path / "cp1/etc/kubernetes/pki"
    leader_app = peers.read_peer_app(leader_peer.local_app_data)
    assert leader_app is not None
    assert (pki_dir / "apiserver.crt").read_text() == leader_app.certificates_for(
        "control-plane/1"
    )["apiserver"]
    # It publishes its own endpoint on kube-control and writes no app data.
    kube = unit1.get_relations("kube-control")[0]
    assert kc.read_provider_unit(kube.local_unit_data) == kc.KubeControlProviderUnit(
        "https://10.0.0.2:6443"
    )
    assert dict(kube.local_app_data) == dict(
        next(r for r in leader_state.relations if r.endpoint == "kube-control").local_app_data
    )


def test_workers_learn_every_endpoint() -> None:
    """The union over each control-plane unit's own bag: never the last writer."""
    bags = [kc.KubeControlProviderUnit(f"https://10.0.0.{n}:6443").to_databag() for n in (3, 1, 2)]
    assert kc.api_endpoints(bags) == [f"https://10.0.0.{n}:6443" for n in (1, 2, 3)]


def test_departed_peer_loses_its_certificates(cluster, tmp_path: pathlib.Path) -> None:
    state, _ = _three_unit_leader(cluster, tmp_path)
    rel = state.get_relations("cluster")[0]
    shrunk = dataclasses.replace(rel, peers_data={1: dict(rel.peers_data[1])})
    state = cluster.ctx.run(
        cluster.ctx.on.relation_departed(shrunk, remote_unit=2, departing_unit=2),
        with_relation(state, shrunk),
    )
    app = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert app is not None
    assert set(app.certificates) == {"control-plane/0", "control-plane/1"}
    assert state.unit_status.message.startswith("API https://192.0.2.0:6443 (2 control planes)")
    assert json.loads(dict(rel.local_app_data)["ca-cert"]) == app.ca_cert


def test_malformed_peer_data_is_ignored_and_named(cluster, tmp_path: pathlib.Path) -> None:
    good, _ = peer_bag(tmp_path / "cp1", "cp-1", ["10.0.0.2"])
    peer = testing.PeerRelation("cluster", peers_data={1: good, 2: {**good, "csrs": '"x"'}})
    state = cluster.converge(base_state(relations=[peer]))
    assert state.unit_status.name == "active"
    assert "; ignoring control-plane/2's peer data: csrs: " in state.unit_status.message
    app = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert app is not None
    assert set(app.certificates) == {"control-plane/0", "control-plane/1"}


def test_non_leader_names_the_leaders_malformed_key(cluster) -> None:
    leader_state = cluster.ctx.run(cluster.ctx.on.update_status(), base_state())  # app secrets
    peer = testing.PeerRelation(
        "cluster", local_app_data={"ca-cert": '"x"', "front-proxy-ca-cert": '"x"'}
    )
    state = testing.State(
        leader=False,
        relations={peer, *(r for r in leader_state.relations if r.endpoint != "cluster")},
        secrets=leader_state.secrets,
    )
    state = cluster.converge(state)
    assert state.unit_status.name == "waiting"
    assert state.unit_status.message.startswith("waiting for certificates from the leader: ")
    assert state.unit_status.message.endswith(
        "; ignoring the leader's peer data: certificates: missing"
    )

"""etcd (CSR out, client cert and members in) and cni (service CIDR out, pod CIDR in)."""

from __future__ import annotations

import dataclasses
import pathlib

from builders import ETCD_URLS, base_state, flags_of, service_argv, with_relation
from ops import testing

from kaji import pki
from kaji.interfaces import cni as cni_if
from kaji.interfaces import etcd as etcd_if


def test_without_etcd_the_unit_waits_and_runs_nothing(ctx, root: pathlib.Path) -> None:
    state = testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    state = ctx.run(ctx.on.install(), state)
    assert state.unit_status == testing.WaitingStatus("waiting for etcd: relate to etcd:db")
    assert not (root / "var/lib/kaji/services/kube-apiserver.json").exists()


def test_sends_a_csr_for_its_own_identity(ctx) -> None:
    state = ctx.run(ctx.on.update_status(), base_state())
    rel = state.get_relations("etcd")[0]
    data = etcd_if.read_requirer_unit(rel.local_unit_data, "control-plane/0")
    assert data is not None
    assert pki.read_csr(data.client_csr) == etcd_if.expected_client_identity("control-plane/0")
    assert state.unit_status == testing.WaitingStatus("waiting for etcd: member URLs and CA")


def test_waits_for_its_client_certificate(ctx, etcd_side) -> None:
    state = ctx.run(ctx.on.update_status(), base_state())
    rel = state.get_relations("etcd")[0]
    provider = etcd_if.EtcdProviderApp(tuple(ETCD_URLS), etcd_side.ca.cert_pem, {})
    state = ctx.run(
        ctx.on.update_status(),
        with_relation(state, dataclasses.replace(rel, remote_app_data=provider.to_databag())),
    )
    assert state.unit_status == testing.WaitingStatus("waiting for etcd: client certificate")


def test_member_change_rerenders_the_apiserver(cluster, root: pathlib.Path) -> None:
    state = cluster.converge(base_state())
    flags = flags_of(service_argv(root, "kube-apiserver"))
    assert flags["etcd-servers"] == ",".join(ETCD_URLS)
    assert (root / "etc/kubernetes/pki/etcd/ca.crt").read_text() == cluster.etcd.ca.cert_pem
    rel = state.get_relations("etcd")[0]
    provider = etcd_if.EtcdProviderApp.from_databag(rel.remote_app_data)
    grown = dataclasses.replace(
        provider, client_urls=(*provider.client_urls, "https://10.0.0.13:2379")
    )
    state = cluster.ctx.run(
        cluster.ctx.on.relation_changed(
            dataclasses.replace(rel, remote_app_data=grown.to_databag())
        ),
        with_relation(state, dataclasses.replace(rel, remote_app_data=grown.to_databag())),
    )
    flags = flags_of(service_argv(root, "kube-apiserver"))
    assert flags["etcd-servers"].split(",") == [*ETCD_URLS, "https://10.0.0.13:2379"]
    from kaji.host import RecordingManager

    assert (
        RecordingManager(root / "var/lib/kaji/services").record("kube-apiserver")["restarts"] == 1
    )


def test_cni_gets_service_cidr_and_node_name(cluster) -> None:
    state = cluster.converge(base_state(config={"service-cidr": "10.100.0.0/16"}))
    rel = state.get_relations("cni")[0]
    assert cni_if.CniPrincipalUnit.from_databag(rel.local_unit_data) == cni_if.CniPrincipalUnit(
        "10.100.0.0/16", "cp-0"
    )


def test_pod_cidr_goes_to_the_controller_manager(cluster, root: pathlib.Path) -> None:
    cluster.converge(base_state())
    flags = flags_of(service_argv(root, "kube-controller-manager"))
    assert flags["cluster-cidr"] == "10.1.0.0/16"
    assert flags["allocate-node-cidrs"] == "false"


def test_without_cni_data_the_unit_waits_for_the_pod_network(cluster, root: pathlib.Path) -> None:
    cni = testing.SubordinateRelation("cni", remote_app_name="cni")
    state = cluster.converge(base_state(relations=[cni]))
    assert state.unit_status == testing.WaitingStatus(
        "waiting for cni: the pod network (cluster CIDR)"
    )
    flags = flags_of(service_argv(root, "kube-controller-manager"))
    assert "cluster-cidr" not in flags
    assert flags["allocate-node-cidrs"] == "false"


def test_malformed_etcd_data_waits_naming_the_sender_and_key(ctx) -> None:
    state = ctx.run(ctx.on.update_status(), base_state())
    rel = state.get_relations("etcd")[0]
    bad = {"client-urls": '["http://10.0.0.11:2379"]', "ca-cert": '"x"', "certificates": "{}"}
    state = ctx.run(
        ctx.on.update_status(), with_relation(state, dataclasses.replace(rel, remote_app_data=bad))
    )
    assert state.unit_status.name == "waiting"
    assert state.unit_status.message.startswith(
        "waiting for etcd: etcd's application data is invalid: "
    )
    key = state.unit_status.message.split("invalid: ")[1].split(":")[0]
    assert key in bad


def test_malformed_cni_data_waits_naming_the_sender_and_key(cluster) -> None:
    cni = testing.SubordinateRelation(
        "cni", remote_app_name="cni", remote_unit_data={"cluster-cidr": '"10.1.0.1/16"'}
    )
    state = cluster.converge(base_state(relations=[cni]))
    assert state.unit_status.name == "waiting"
    assert state.unit_status.message.startswith("waiting for cni: cni/0's data is invalid: ")

"""The cni subordinate relation: the worker is the provider (container scope)."""

from __future__ import annotations

import yaml
from builders import (
    NODE,
    UNIT,
    cni_relation,
    joined,
    kube_control,
    provider_app,
    published_csr,
    service,
    sign,
    text,
)
from ops import testing

from kaji import pki
from kaji.host import Host
from kaji.interfaces.cni import CniPrincipalUnit, CniUnit


def test_worker_tells_cni_the_service_cidr_and_node_name(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    cni = cni_relation(ready=False)
    relation = kube_control(
        provider_app(ca, service_cidr="10.96.0.0/16", dns_address="10.96.0.10")
    )
    state = ctx.run(ctx.on.relation_joined(cni), testing.State(relations=[relation, cni]))
    sent = CniPrincipalUnit.from_databag(state.get_relation(cni.id).local_unit_data)
    assert sent == CniPrincipalUnit("10.96.0.0/16", NODE)


def test_nothing_is_sent_to_cni_before_the_control_plane_publishes(
    ctx: testing.Context, machine: Host
) -> None:
    cni = cni_relation(ready=False)
    state = ctx.run(ctx.on.relation_joined(cni), testing.State(relations=[kube_control(), cni]))
    assert state.get_relation(cni.id).local_unit_data == cni.local_unit_data


def test_node_waits_for_cni_data_and_kube_proxy_waits_with_it(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca))
    cni = cni_relation(ready=False)
    state = ctx.run(ctx.on.relation_changed(relation), testing.State(relations=[relation, cni]))
    cert = sign(published_csr(state), ca)
    relation = kube_control(provider_app(ca, {UNIT: cert}))
    state = ctx.run(ctx.on.relation_changed(relation), testing.State(relations=[relation, cni]))
    assert state.unit_status == testing.WaitingStatus(
        f"node {NODE}: waiting for CNI data from cni"
    )
    assert service(machine, "kubelet") is not None
    assert service(machine, "kube-proxy") is None
    ready = cni_relation(conf_path="/etc/cni/kaji.d")
    state = ctx.run(ctx.on.relation_changed(ready), testing.State(relations=[relation, ready]))
    assert state.unit_status.name == "active"
    proxy = yaml.safe_load(text(machine, "/etc/kubernetes/kube-proxy-config.yaml"))
    assert proxy["clusterCIDR"] == "10.1.0.0/16"
    assert proxy["hostnameOverride"] == NODE
    assert proxy["mode"] == "iptables"
    assert proxy["clientConnection"]["kubeconfig"] == str(
        machine.path("/etc/kubernetes/kube-proxy.conf")
    )
    containerd = text(machine, "/etc/containerd/config.toml")
    assert f'conf_dir = "{machine.path("/etc/cni/kaji.d")}"' in containerd


def test_without_a_cni_relation_the_node_is_blocked(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, cni=False)
    assert state.unit_status == testing.BlockedStatus(f"node {NODE}: needs a CNI: relate cni")


def test_proxy_mode_and_extra_config(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    config = {"proxy-mode": "ipvs", "proxy-extra-config": "ipvs: {scheduler: lc}"}
    joined(ctx, ca, config=config)
    proxy = yaml.safe_load(text(machine, "/etc/kubernetes/kube-proxy-config.yaml"))
    assert proxy["mode"] == "ipvs"
    assert proxy["ipvs"] == {"scheduler": "lc"}


def test_malformed_cni_data_is_ignored_and_named(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, cni=False)
    relation = state.get_relations("kube-control")[0]
    cni = testing.SubordinateRelation(
        "cni", "kaji-cni", id=9, remote_app_name="cni", remote_unit_data={"cluster-cidr": "x"}
    )
    state = ctx.run(ctx.on.relation_changed(cni), testing.State(relations=[relation, cni]))
    assert state.unit_status == testing.WaitingStatus(
        f"node {NODE}: waiting for valid CNI data: cni/0 sent a bad 'cluster-cidr'"
        " (not valid JSON: Expecting value: line 1 column 1 (char 0))"
    )
    assert service(machine, "kube-proxy") is None


def test_a_pod_network_of_another_ip_family_is_refused(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, cni=False)
    relation = state.get_relations("kube-control")[0]
    data = CniUnit("fd00:10::/56", "/etc/cni/net.d", "fd00:10:0:3::/64").to_databag()
    cni = testing.SubordinateRelation(
        "cni", "kaji-cni", id=9, remote_app_name="cni", remote_unit_data=data
    )
    state = ctx.run(ctx.on.relation_changed(cni), testing.State(relations=[relation, cni]))
    assert state.unit_status == testing.WaitingStatus(
        f"node {NODE}: waiting for valid CNI data: cni/0 sent a bad 'cluster-cidr'"
        " (IPv6, but control-plane's service-cidr 10.152.183.0/24 is IPv4)"
    )
    assert service(machine, "kube-proxy") is None

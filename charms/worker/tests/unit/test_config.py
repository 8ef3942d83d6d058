"""Config options: invalid values block naming the option, before anything is written."""

from __future__ import annotations

import dataclasses

import pytest
from builders import UNIT, cni_relation, joined, kube_control, provider_app
from kaji_worker.config import WorkerConfig, parse_loadbalancer
from ops import testing

from kaji import pki
from kaji.host import Host

BAD = [
    ("node-labels", "novalue", "node-labels"),
    ("node-labels", "node-role.kubernetes.io/worker=", "node-labels"),
    ("node-labels", "a=b a=c", "node-labels"),
    ("node-taints", "dedicated=gpu:Sometimes", "node-taints"),
    ("node-taints", "bad key:NoSchedule", "node-taints"),
    ("proxy-mode", "userspace", "proxy-mode"),
    ("registry-mirrors", "docker.io=ftp://mirror", "registry-mirrors"),
    ("registry-mirrors", "docker.io", "registry-mirrors"),
    ("kubelet-extra-config", "[1, 2]", "kubelet-extra-config"),
    (
        "kubelet-extra-config",
        "authentication: {anonymous: {enabled: true}}",
        "kubelet-extra-config",
    ),
    ("kubelet-extra-config", "maxPods: [", "kubelet-extra-config"),
    ("kubelet-extra-config", "[" * 5000, "kubelet-extra-config"),
    ("kubelet-extra-config", "a: &a [*a]", "kubelet-extra-config"),
    ("kubelet-extra-config", "x: !!binary aGk=", "kubelet-extra-config"),
    ("kubelet-extra-config", "maxPods: .inf", "kubelet-extra-config"),
    ("kubelet-extra-config", "a: {1: 2}", "kubelet-extra-config"),
    ("proxy-extra-config", "clusterCIDR: 10.0.0.0/8", "proxy-extra-config"),
    ("loadbalancer-address", "http://lb.example:6443", "loadbalancer-address"),
    ("loadbalancer-address", "https://lb.example/path", "loadbalancer-address"),
    ("release-mirror", "file:///tmp", "release-mirror"),
    ("kubernetes-node-sha256", "abc", "kubernetes-node-sha256"),
]


@pytest.mark.parametrize(("option", "value", "named"), BAD)
def test_invalid_option_blocks_and_touches_nothing(
    ctx: testing.Context, machine: Host, option: str, value: str, named: str
) -> None:
    relation = kube_control()
    state = ctx.run(
        ctx.on.config_changed(), testing.State(config={option: value}, relations=[relation])
    )
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith(f"invalid config {named}:")
    assert list(machine.root.iterdir()) == []  # not a single file on the machine
    assert state.get_relation(relation.id).local_unit_data == relation.local_unit_data


def test_nftables_needs_a_recent_cluster(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca, kubernetes_version="1.30.5"))
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(config={"proxy-mode": "nftables"}, relations=[relation, cni_relation()]),
    )
    assert state.unit_status == testing.BlockedStatus(
        "invalid config proxy-mode: nftables needs Kubernetes 1.31 or later (cluster runs 1.30.5)"
    )
    assert list(machine.root.iterdir()) == []


def test_unsupported_cluster_version_blocks(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca, kubernetes_version="1.20.0"))
    state = ctx.run(ctx.on.config_changed(), testing.State(relations=[relation]))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert "1.20.0 is not supported" in state.unit_status.message
    assert UNIT not in state.unit_status.message


def test_fixing_the_option_unblocks(ctx: testing.Context, machine: Host) -> None:
    bad = ctx.run(ctx.on.config_changed(), testing.State(config={"proxy-mode": "x"}))
    assert isinstance(bad.unit_status, testing.BlockedStatus)
    good = ctx.run(ctx.on.config_changed(), testing.State(config={"proxy-mode": "ipvs"}))
    assert good.unit_status == testing.BlockedStatus("needs a control plane: relate kube-control")


def test_options_parse_to_normalised_values() -> None:
    parsed = WorkerConfig.from_options(
        {
            "node-labels": "node.kubernetes.io/pool=gpu team=ml",
            "node-taints": "dedicated=gpu:NoSchedule spot:PreferNoSchedule",
            "proxy-mode": "ipvs",
            "registry-mirrors": "docker.io=https://m1.example,http://10.0.0.5:5000 _default=https://m2",
            "kubelet-extra-config": "maxPods: 200\nevictionHard: {memory.available: 200Mi}",
            "proxy-extra-config": "ipvs: {scheduler: lc}",
            "loadbalancer-address": "fd00::5",
        }
    )
    assert parsed.node_labels == {"node.kubernetes.io/pool": "gpu", "team": "ml"}
    assert [t.as_config() for t in parsed.node_taints] == [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        {"key": "spot", "effect": "PreferNoSchedule"},
    ]
    assert parsed.registry_mirrors == {
        "docker.io": ("https://m1.example", "http://10.0.0.5:5000"),
        "_default": ("https://m2",),
    }
    assert parsed.kubelet_extra_config == {
        "maxPods": 200,
        "evictionHard": {"memory.available": "200Mi"},
    }
    assert parsed.loadbalancer_url == "https://[fd00::5]:6443"
    assert parse_loadbalancer("lb.example") == "https://lb.example:6443"
    assert parse_loadbalancer("https://lb.example:443/") == "https://lb.example:443"
    assert WorkerConfig.from_options({}) == WorkerConfig()


def test_invalid_option_on_a_running_node_changes_no_file_and_stays_blocked(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca)
    files = {
        machine.machine_path(p): p.read_bytes() for p in machine.root.rglob("*") if p.is_file()
    }
    stats = machine.stats.as_dict()
    bad = dataclasses.replace(state, config={"proxy-mode": "userspace"})
    for event in (ctx.on.config_changed(), ctx.on.update_status()):
        after = ctx.run(event, bad)
        assert after.unit_status == testing.BlockedStatus(
            "invalid config proxy-mode: 'userspace' is not one of iptables, ipvs, nftables"
        )
        assert {
            machine.machine_path(p): p.read_bytes() for p in machine.root.rglob("*") if p.is_file()
        } == files
        assert machine.stats.as_dict() == stats
    # Fixed again: the node is as it was, and nothing needs rewriting.
    good = ctx.run(ctx.on.config_changed(), state)
    assert good.unit_status == state.unit_status
    assert machine.stats.as_dict() == stats

"""Invalid config blocks the unit naming the option, before anything on the machine changes."""

from __future__ import annotations

import pathlib

import pytest
from builders import base_state, cni_bag, files_under
from ops import testing


@pytest.mark.parametrize(
    ("options", "option", "reason"),
    [
        ({"service-cidr": "10.152.183.1/24"}, "service-cidr", "not a valid CIDR"),
        ({"service-cidr": "banana"}, "service-cidr", "not a CIDR"),
        ({"service-cidr": "10.0.0.0/8"}, "service-cidr", "/12 or smaller"),
        ({"kubernetes-version": "1.25.0"}, "kubernetes-version", "not supported"),
        ({"kubernetes-version": "latest"}, "kubernetes-version", "not a version"),
        ({"api-extra-args": "v=1 v=2"}, "api-extra-args", "given twice"),
        ({"api-extra-args": "'unbalanced"}, "api-extra-args", "cannot parse"),
        ({"api-extra-args": "insecure-port=8080"}, "api-extra-args", "no longer exist"),
        ({"scheduler-extra-args": "Bad_Flag=1"}, "scheduler-extra-args", "not name=value"),
        ({"controller-manager-extra-args": "=x"}, "controller-manager-extra-args", "name"),
        ({"authorization-mode": "AlwaysAllow"}, "authorization-mode", "Node and RBAC"),
        ({"authorization-mode": "Node,RBAC,Magic"}, "authorization-mode", "unknown mode"),
        ({"extra-sans": "ok.example not_a_name"}, "extra-sans", "neither an IP"),
        ({"loadbalancer-address": "a.example b.example"}, "loadbalancer-address", "one IP"),
        ({"loadbalancer-address": "https://lb.example.com"}, "loadbalancer-address", "scheme"),
        ({"loadbalancer-address": "lb.example.com:6443"}, "loadbalancer-address", "no scheme"),
        ({"extra-sans": "https://x.example"}, "extra-sans", "no scheme, port or path"),
        ({"image-registry": "registry.example.com/Upper"}, "image-registry", "lowercase path"),
        ({"image-registry": "registry.example.com:99999"}, "image-registry", "out of range"),
        ({"service-cidr": "fd00::/100"}, "service-cidr", "/108 or smaller"),
        ({"cluster-domain": "Cluster.Local"}, "cluster-domain", "DNS domain"),
        ({"image-registry": "https://registry.k8s.io"}, "image-registry", "not a registry"),
        ({"audit-policy": "kind: Nope"}, "audit-policy", "Policy"),
        ({"audit-log-maxsize": 0}, "audit-log-maxsize", "between 1 and 100000"),
        ({"release-mirror": "ftp://mirror"}, "release-mirror", "http"),
        ({"kubernetes-sha256": "abc"}, "kubernetes-sha256", "64 hex"),
    ],
)
def test_invalid_option_blocks_naming_it_and_touches_nothing(
    ctx: testing.Context, root: pathlib.Path, options: dict, option: str, reason: str
) -> None:
    state = ctx.run(ctx.on.config_changed(), base_state(config=options))
    assert state.unit_status.name == "blocked"
    assert state.unit_status.message.startswith(f"{option}: ")
    assert reason in state.unit_status.message
    assert files_under(root) == []
    assert not state.secrets
    for relation in state.relations:
        assert not dict(relation.local_unit_data).keys() - {
            "egress-subnets",
            "ingress-address",
            "private-address",
        }


def test_service_cidr_overlapping_the_pod_network_blocks(
    ctx: testing.Context, root: pathlib.Path
) -> None:
    cni = testing.SubordinateRelation(
        "cni", remote_app_name="cni", remote_unit_data=cni_bag("10.152.0.0/16", "10.152.1.0/24")
    )
    state = ctx.run(ctx.on.config_changed(), base_state(relations=[cni]))
    assert state.unit_status == testing.BlockedStatus(
        "service-cidr: 10.152.183.0/24 overlaps the pod network 10.152.0.0/16"
    )
    assert files_under(root) == []


def test_fixing_the_option_unblocks(ctx: testing.Context, root: pathlib.Path) -> None:
    state = ctx.run(ctx.on.config_changed(), base_state(config={"service-cidr": "nope"}))
    assert state.unit_status.name == "blocked"
    state = ctx.run(ctx.on.config_changed(), testing.State(leader=True, relations=state.relations))
    assert state.unit_status.name == "waiting"
    assert (root / "etc/kubernetes/pki/ca.crt").is_file()


def test_service_cidr_of_another_ip_family_than_the_pod_network_blocks(
    ctx: testing.Context, root: pathlib.Path
) -> None:
    state = ctx.run(ctx.on.config_changed(), base_state(config={"service-cidr": "fd00::/112"}))
    assert state.unit_status == testing.BlockedStatus(
        "service-cidr: fd00::/112 is IPv6 but the pod network 10.1.0.0/16 (from cni) is IPv4:"
        " the IP families must match"
    )
    assert files_under(root) == []


def test_an_upper_case_registry_host_is_valid_for_the_charm_and_the_workers(cluster) -> None:
    """One definition of a valid registry: what the option accepts, kube-control carries."""
    from kaji.interfaces import kube_control as kc

    kube = testing.Relation("kube-control", remote_app_name="worker")
    state = cluster.converge(
        base_state(relations=[kube], config={"image-registry": "Registry.example.com"})
    )
    assert state.unit_status.name == "active"
    app = kc.read_provider_app(state.get_relations("kube-control")[0].local_app_data)
    assert app is not None
    assert app.image_registry == "Registry.example.com"

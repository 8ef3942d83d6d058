from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_interfaces_support import (
    FUZZ,
    JUJU_BAG,
    ca,
    cert_for,
    csr_for,
    identity,
    mutated_databags,
    random_databags,
    read_safely,
)

from kaji import pki
from kaji.interfaces import RelationDataError, juju_addresses
from kaji.interfaces import kube_control as kc

NODE = "worker-0"
ADDRESSES = ("10.0.0.9", "fd00::9")
NODE_ID = kc.expected_node_identity(NODE, ADDRESSES)
OTHER_NODE_ID = kc.expected_node_identity("worker-1", ["10.0.0.10"])


def requirer() -> kc.KubeControlRequirerUnit:
    return kc.KubeControlRequirerUnit(
        node_name=NODE, addresses=("fd00:0::9", "10.0.0.9"), kubelet_csr=csr_for(NODE_ID)
    )


def provider_app() -> kc.KubeControlProviderApp:
    return kc.KubeControlProviderApp(
        ca_cert=ca().cert_pem,
        service_cidr="10.152.183.0/24",
        dns_address="10.152.183.10",
        dns_domain="cluster.local",
        kubernetes_version="1.31.2",
        image_registry="registry.k8s.io",
        certificates={"worker/1": cert_for(OTHER_NODE_ID), "worker/0": cert_for(NODE_ID)},
    )


def test_expected_node_identity() -> None:
    assert kc.expected_node_identity(NODE, ADDRESSES) == pki.Identity.of(
        "system:node:worker-0",
        organizations=["system:nodes"],
        dns_names=["worker-0"],
        ip_addresses=["10.0.0.9", "fd00::9"],
    )
    with pytest.raises(RelationDataError, match="node-name"):
        kc.expected_node_identity("Worker_0", ADDRESSES)
    with pytest.raises(RelationDataError, match="addresses"):
        kc.expected_node_identity(NODE, ["10.0.0.300"])


def test_requirer_round_trip_normalises_addresses() -> None:
    data = requirer()
    assert data.addresses == ("10.0.0.9", "fd00::9")
    bag = data.to_databag()
    assert json.loads(bag["addresses"]) == ["10.0.0.9", "fd00::9"]
    assert json.loads(bag["node-name"]) == NODE
    assert kc.KubeControlRequirerUnit.from_databag(bag) == data
    assert kc.read_requirer_unit({**bag, **JUJU_BAG}) == data


def test_requirer_csr_must_match_node_and_addresses_in_the_same_bag() -> None:
    bag = requirer().to_databag()
    with pytest.raises(RelationDataError, match=r"kubelet-csr.*CN does not match its node name"):
        kc.read_requirer_unit({**bag, "kubelet-csr": json.dumps(csr_for(OTHER_NODE_ID))})
    with pytest.raises(RelationDataError, match=r"kubelet-csr.*IP addresses do not match"):
        kc.read_requirer_unit({**bag, "addresses": '["10.0.0.9"]'})
    with pytest.raises(RelationDataError, match=r"kubelet-csr.*CN does not match"):
        kc.read_requirer_unit({**bag, "node-name": '"worker-7"'})
    not_a_node = identity("system:kube-proxy", o=["system:node-proxier"])
    with pytest.raises(RelationDataError, match=r"kubelet-csr.*O does not match system:nodes"):
        kc.read_requirer_unit({**bag, "kubelet-csr": json.dumps(csr_for(not_a_node))})


def test_node_csr_problems_are_short_and_name_what_differs() -> None:
    assert kc.node_csr_problems(NODE_ID, NODE_ID) == []
    problems = kc.node_csr_problems(OTHER_NODE_ID, NODE_ID)
    assert [p.split(" (")[0] for p in problems] == [
        "CN does not match its node name",
        "DNS names do not match its node name",
        "IP addresses do not match its addresses",
    ]
    hostile = identity("system:node:" + "x" * 5000, o=["system:nodes"], dns=[NODE], ips=ADDRESSES)
    (problem,) = kc.node_csr_problems(hostile, NODE_ID)
    assert len(problem) < 250


def test_requirer_addresses_can_be_checked_against_juju() -> None:
    bag = {**requirer().to_databag(), "ingress-address": "10.0.0.9"}
    with pytest.raises(RelationDataError, match=r"addresses.*fd00::9"):
        kc.read_requirer_unit(bag, allowed_addresses=juju_addresses(bag))
    allowed = ["10.0.0.9", "fd00:0:0::9"]
    assert kc.read_requirer_unit(bag, allowed_addresses=allowed) == requirer()


def test_provider_unit_round_trip_and_https_only() -> None:
    data = kc.KubeControlProviderUnit("https://10.0.0.5:6443")
    assert kc.read_provider_unit(data.to_databag()) == data
    assert kc.read_provider_unit(dict(JUJU_BAG)) is None
    with pytest.raises(RelationDataError, match=r"api-endpoint.*https"):
        kc.read_provider_unit({"api-endpoint": '"http://10.0.0.5:6443"'})


def test_api_endpoints_is_the_sorted_union_of_every_unit() -> None:
    bags = [
        kc.KubeControlProviderUnit("https://10.0.0.7:6443").to_databag(),
        dict(JUJU_BAG),  # not ready yet
        kc.KubeControlProviderUnit("https://10.0.0.5:6443").to_databag(),
        {"api-endpoint": '"http://10.0.0.66:6443"'},  # malformed: skipped
        kc.KubeControlProviderUnit("https://10.0.0.6:6443/").to_databag(),
        kc.KubeControlProviderUnit("https://10.0.0.5:6443").to_databag(),
    ]
    expected = ["https://10.0.0.5:6443", "https://10.0.0.6:6443", "https://10.0.0.7:6443"]
    assert kc.api_endpoints(bags) == expected
    assert kc.api_endpoints(reversed(bags)) == expected
    assert kc.api_endpoints([]) == []


def test_provider_app_round_trip() -> None:
    data = provider_app()
    assert list(data.certificates) == ["worker/0", "worker/1"]
    bag = data.to_databag()
    assert set(bag) == {
        "ca-cert",
        "certificates",
        "service-cidr",
        "dns-address",
        "dns-domain",
        "kubernetes-version",
        "image-registry",
    }
    assert kc.read_provider_app(bag) == data
    assert data.certificate_for("worker/0") == cert_for(NODE_ID)
    assert kc.read_provider_app({}) is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dns-address", "10.152.184.10", "not a host address"),
        ("dns-address", "10.152.183.0", "not a host address"),
        ("service-cidr", "10.152.183.1/24", "not a CIDR"),
        ("kubernetes-version", "v1.31.2", "1.x.y"),
        ("kubernetes-version", "1.31", "1.x.y"),
        ("kubernetes-version", "2.0.0", "1.x.y"),
        ("image-registry", "https://registry.k8s.io", "host"),
        ("image-registry", "", "host"),
        ("image-registry", "registry.example.com/Path", "host"),
        ("image-registry", "registry.example.com:99999", "port"),
        ("dns-domain", "Cluster.Local", "DNS-1123"),
    ],
)
def test_provider_app_field_validation(key: str, value: str, message: str) -> None:
    bag = {**provider_app().to_databag(), key: json.dumps(value)}
    with pytest.raises(RelationDataError, match=rf"'{key}'.*{message}"):
        kc.read_provider_app(bag)


def test_provider_app_certificates_must_be_node_certificates() -> None:
    bag = provider_app().to_databag()
    admin = cert_for(identity("kubernetes-admin", o=["system:masters"]))
    with pytest.raises(RelationDataError, match="not a node certificate"):
        kc.read_provider_app({**bag, "certificates": json.dumps({"worker/0": admin})})
    with pytest.raises(RelationDataError, match="is a CA"):
        kc.read_provider_app({**bag, "certificates": json.dumps({"worker/0": ca().cert_pem})})


def test_image_registry_forms() -> None:
    for registry in (
        "registry.k8s.io",
        "localhost:5000/mirror/k8s",
        "10.0.0.1:5000",
        "Registry.example.com",  # the control plane's option accepts it: so must the contract
    ):
        data = kc.KubeControlProviderApp(
            ca_cert=ca().cert_pem,
            service_cidr="fd00:10::/108",
            dns_address="fd00:10::a",
            dns_domain="cluster.local",
            kubernetes_version="1.30.0",
            image_registry=registry,
        )
        assert kc.read_provider_app(data.to_databag()) == data


REQUIRER_KEYS = ["node-name", "addresses", "kubelet-csr"]
APP_KEYS = list(provider_app().to_databag())


@FUZZ
@given(random_databags(REQUIRER_KEYS))
def test_random_requirer_databags(bag: dict[str, str]) -> None:
    result = read_safely(kc.read_requirer_unit, bag)
    assert result is None or isinstance(result, (RelationDataError, kc.KubeControlRequirerUnit))


@FUZZ
@given(mutated_databags(requirer().to_databag(), [csr_for(OTHER_NODE_ID), cert_for(NODE_ID)]))
def test_broken_requirer_databags_are_refused(bag: dict[str, str]) -> None:
    result = read_safely(kc.read_requirer_unit, bag)
    assert result is None or isinstance(result, RelationDataError)


@FUZZ
@given(st.lists(random_databags(["api-endpoint"]), max_size=4))
def test_random_provider_unit_databags(bags: list[dict[str, str]]) -> None:
    for bag in bags:
        read_safely(kc.read_provider_unit, bag)
    endpoints = kc.api_endpoints(bags)
    assert endpoints == sorted(set(endpoints))
    assert all(url.startswith("https://") for url in endpoints)


@FUZZ
@given(random_databags(APP_KEYS))
def test_random_provider_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(kc.read_provider_app, bag)
    assert result is None or isinstance(result, (RelationDataError, kc.KubeControlProviderApp))


@FUZZ
@given(mutated_databags(provider_app().to_databag(), [csr_for(NODE_ID), ca().cert_pem]))
def test_mutated_provider_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(kc.read_provider_app, bag)
    if isinstance(result, kc.KubeControlProviderApp):
        assert kc.read_provider_app(result.to_databag()) == result


@FUZZ
@given(
    st.text(alphabet="aAzZ09.-_:/", max_size=40)
    | st.sampled_from(["Registry.example.com", "r.example:5000/x", "x" * 201])
)
def test_image_registry_has_one_definition(registry: str) -> None:
    """What kaji.kubernetes (the control plane's option check) accepts, the contract accepts."""
    from kaji import kubernetes as k8s

    try:
        k8s.check_image_registry(registry)
        option_ok = True
    except ValueError:
        option_ok = False
    try:
        kc.check_image_registry("image-registry", registry)
        contract_ok = True
    except RelationDataError:
        contract_ok = False
    assert option_ok == contract_ok

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
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
from kaji.interfaces import RelationDataError
from kaji.interfaces import control_plane_peers as cpp

HOST = "juju-abc-3"
ADDRESSES = ("10.0.0.5",)
APISERVER_ID = cpp.expected_apiserver_identity(
    HOST, ADDRESSES, "10.152.183.1", "cluster.local", extra_dns_names=["k8s.example.com"]
)


def csrs() -> dict[str, str]:
    found = {cpp.APISERVER: csr_for(APISERVER_ID)}
    for purpose in cpp.CLIENT_IDENTITIES:
        found[purpose] = csr_for(cpp.client_identity(purpose))
    return found


def certs() -> dict[str, str]:
    found = {cpp.APISERVER: cert_for(APISERVER_ID, pki.Profile.SERVER)}
    for purpose in cpp.CLIENT_IDENTITIES:
        found[purpose] = cert_for(cpp.client_identity(purpose), pki.Profile.CLIENT)
    return found


def peer_unit() -> cpp.ControlPlanePeerUnit:
    return cpp.ControlPlanePeerUnit(hostname=HOST, addresses=ADDRESSES, csrs=csrs())


def peer_app() -> cpp.ControlPlanePeerApp:
    return cpp.ControlPlanePeerApp(
        ca_cert=ca().cert_pem,
        front_proxy_ca_cert=ca("kaji-front-proxy-ca").cert_pem,
        certificates={
            "control-plane/0": certs(),
            "control-plane/1": {"scheduler": certs()["scheduler"]},
        },
    )


def test_identities() -> None:
    assert cpp.PURPOSES == (
        "apiserver",
        "apiserver-kubelet-client",
        "front-proxy-client",
        "controller-manager",
        "scheduler",
        "admin",
    )
    assert cpp.client_identity("admin") == pki.Identity.of(
        "kubernetes-admin", organizations=["system:masters"]
    )
    assert cpp.client_identity("scheduler").common_name == "system:kube-scheduler"
    assert APISERVER_ID.dns_names == {
        HOST,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "k8s.example.com",
    }
    assert APISERVER_ID.ip_addresses == {"10.0.0.5", "10.152.183.1"}
    with pytest.raises(RelationDataError):
        cpp.client_identity("apiserver")


def test_peer_unit_round_trip() -> None:
    data = peer_unit()
    assert list(data.csrs) == sorted(cpp.PURPOSES)
    bag = data.to_databag()
    assert set(bag) == {"hostname", "addresses", "csrs"}
    assert cpp.read_peer_unit({**bag, **JUJU_BAG}) == data
    assert cpp.read_peer_unit(dict(JUJU_BAG)) is None
    subset = cpp.ControlPlanePeerUnit(HOST, ADDRESSES, {"scheduler": csrs()["scheduler"]})
    assert cpp.read_peer_unit(subset.to_databag()) == subset


@pytest.mark.parametrize(
    ("public", "san"),
    [("203.0.113.7", "ip"), ("cp-0.example.com", "dns"), ("2001:db8::0:7", "ip")],
)
def test_public_address_is_an_apiserver_san(public: str, san: str) -> None:
    expected = cpp.expected_apiserver_identity(
        HOST, ADDRESSES, "10.152.183.1", "cluster.local", public_address=public
    )
    if san == "ip":
        assert ipaddress.ip_address(public).compressed in expected.ip_addresses
    else:
        assert public in expected.dns_names
    data = cpp.ControlPlanePeerUnit(
        HOST, ADDRESSES, {cpp.APISERVER: csr_for(expected)}, public_address=public
    )
    bag = data.to_databag()
    assert "public-address" in bag
    assert cpp.read_peer_unit(bag) == data
    # A CSR that leaves the public address out does not match the unit's own claim.
    with pytest.raises(RelationDataError, match="public address"):
        cpp.read_peer_unit({**peer_unit().to_databag(), "public-address": json.dumps(public)})


@pytest.mark.parametrize("bad", ["https://lb.example.com", "Not_A_Name", "", "1.2.3.4:6443"])
def test_public_address_must_be_an_ip_or_a_name(bad: str) -> None:
    with pytest.raises(RelationDataError, match="public-address"):
        cpp.expected_apiserver_identity(
            HOST, ADDRESSES, "10.152.183.1", "cluster.local", public_address=bad
        )
    with pytest.raises(RelationDataError, match="public-address"):
        cpp.read_peer_unit({**peer_unit().to_databag(), "public-address": json.dumps(bad)})


def test_leader_checks_the_apiserver_csr_exactly() -> None:
    data = cpp.read_peer_unit(peer_unit().to_databag())
    assert data is not None
    assert pki.check_csr(data.csrs[cpp.APISERVER], APISERVER_ID) == APISERVER_ID


@pytest.mark.parametrize(
    ("purpose", "who"),
    [
        ("scheduler", identity("system:kube-controller-manager")),
        ("admin", identity("kubernetes-admin")),  # O missing
        ("controller-manager", identity("system:kube-controller-manager", o=["system:masters"])),
        ("apiserver", identity("kube-apiserver", dns=["other-host"], ips=["10.0.0.5"])),
        ("apiserver", identity("kube-apiserver", dns=[HOST], ips=["10.0.0.6"])),
        (
            "apiserver",
            identity("kube-apiserver", o=["system:masters"], dns=[HOST], ips=["10.0.0.5"]),
        ),
        ("apiserver", identity("kube-apiserver-x", dns=[HOST], ips=["10.0.0.5"])),
    ],
)
def test_csr_for_the_wrong_identity_is_refused(purpose: str, who: pki.Identity) -> None:
    bag = {**peer_unit().to_databag(), "csrs": json.dumps({**csrs(), purpose: csr_for(who)})}
    with pytest.raises(RelationDataError, match=rf"'csrs\[{purpose}\]'"):
        cpp.read_peer_unit(bag)


def test_unknown_purpose_is_refused() -> None:
    bag = {**peer_unit().to_databag(), "csrs": json.dumps({"kubelet": csrs()["admin"]})}
    with pytest.raises(RelationDataError, match="unknown purpose"):
        cpp.read_peer_unit(bag)


def test_peer_app_round_trip() -> None:
    data = peer_app()
    bag = data.to_databag()
    assert set(bag) == {"ca-cert", "front-proxy-ca-cert", "certificates"}
    assert cpp.read_peer_app(bag) == data
    assert cpp.read_peer_app({}) is None
    assert dict(data.certificates_for("control-plane/1")) == {"scheduler": certs()["scheduler"]}
    assert data.certificates_for("control-plane/9") == {}


@pytest.mark.parametrize(
    ("certificates", "message"),
    [
        ({"control-plane/0": {"scheduler": "x"}}, "PEM"),
        ({"control-plane/0": {"kubelet": "x"}}, "unknown purpose"),
        ({"control-plane/0": ["x"]}, "object"),
        ({"cp": {}}, "unit name"),
        ({"control-plane/0": {"admin": "CERT"}}, "PEM"),
    ],
)
def test_peer_app_validation(certificates: object, message: str) -> None:
    bag = {**peer_app().to_databag(), "certificates": json.dumps(certificates)}
    with pytest.raises(RelationDataError, match=message):
        cpp.read_peer_app(bag)


def test_peer_app_departed_nodes_round_trip_sorted_and_validated() -> None:
    data = cpp.ControlPlanePeerApp(
        ca_cert=ca().cert_pem,
        front_proxy_ca_cert=ca("kaji-front-proxy-ca").cert_pem,
        departed_nodes=("worker-2", "worker-1", "worker-2"),
    )
    assert data.departed_nodes == ("worker-1", "worker-2")
    bag = data.to_databag()
    assert json.loads(bag["departed-nodes"]) == ["worker-1", "worker-2"]
    assert cpp.read_peer_app(bag) == data
    assert "departed-nodes" not in peer_app().to_databag()  # absent when there are none
    for bad in ('"worker-1"', '["Worker_1"]', "[1]"):
        with pytest.raises(RelationDataError, match="departed-nodes"):
            cpp.read_peer_app({**bag, "departed-nodes": bad})


def test_peer_app_certificate_must_name_its_purpose() -> None:
    swapped = {"control-plane/0": {"scheduler": certs()["admin"]}}
    bag = {**peer_app().to_databag(), "certificates": json.dumps(swapped)}
    with pytest.raises(RelationDataError, match="kubernetes-admin"):
        cpp.read_peer_app(bag)


@FUZZ
@given(random_databags(["hostname", "addresses", "csrs", "public-address"]))
def test_random_peer_unit_databags(bag: dict[str, str]) -> None:
    result = read_safely(cpp.read_peer_unit, bag)
    assert result is None or isinstance(result, (RelationDataError, cpp.ControlPlanePeerUnit))


@FUZZ
@given(mutated_databags(peer_unit().to_databag(), [csr_for(identity("x")), certs()["admin"]]))
def test_mutated_peer_unit_databags(bag: dict[str, str]) -> None:
    result = read_safely(cpp.read_peer_unit, bag)
    if isinstance(result, cpp.ControlPlanePeerUnit):
        assert cpp.read_peer_unit(result.to_databag()) == result


@FUZZ
@given(random_databags(["ca-cert", "front-proxy-ca-cert", "certificates", "departed-nodes"]))
def test_random_peer_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(cpp.read_peer_app, bag)
    assert result is None or isinstance(result, (RelationDataError, cpp.ControlPlanePeerApp))


@FUZZ
@given(mutated_databags(peer_app().to_databag(), [ca().cert_pem, csrs()["admin"]]))
def test_mutated_peer_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(cpp.read_peer_app, bag)
    if isinstance(result, cpp.ControlPlanePeerApp):
        assert cpp.read_peer_app(result.to_databag()) == result

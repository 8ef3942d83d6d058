from __future__ import annotations

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
from kaji.interfaces import RelationDataError, etcd_peers

UNIT = "etcd/0"
HOST = "juju-abc-0"
ADDRESSES = ("10.0.0.1",)
MEMBER_ID = etcd_peers.expected_member_identity(UNIT, HOST, ADDRESSES)
OTHER_ID = etcd_peers.expected_member_identity("etcd/1", "juju-abc-1", ["10.0.0.2"])


def peer_unit() -> etcd_peers.EtcdPeerUnit:
    return etcd_peers.EtcdPeerUnit(
        member_name="etcd-0",
        hostname=HOST,
        addresses=ADDRESSES,
        peer_url="https://10.0.0.1:2380",
        client_url="https://juju-abc-0:2379/",
        peer_csr=csr_for(MEMBER_ID),
    )


def peer_app() -> etcd_peers.EtcdPeerApp:
    return etcd_peers.EtcdPeerApp(
        ca_cert=ca().cert_pem,
        cluster_token="kaji-etcd-1f2e",
        cluster_state="new",
        members={"etcd-1": "https://10.0.0.2:2380", "etcd-0": "https://10.0.0.1:2380"},
        certificates={UNIT: cert_for(MEMBER_ID), "etcd/1": cert_for(OTHER_ID)},
    )


def test_member_identity_and_name() -> None:
    assert etcd_peers.member_name_for("etcd/12") == "etcd-12"
    assert etcd_peers.expected_member_identity(UNIT, HOST, ADDRESSES) == pki.Identity.of(
        "etcd/0",
        organizations=["kaji:etcd-members"],
        dns_names=["juju-abc-0", "localhost"],
        ip_addresses=["10.0.0.1", "127.0.0.1"],
    )
    with pytest.raises(RelationDataError):
        etcd_peers.member_name_for("etcd")


def test_peer_unit_round_trip() -> None:
    data = peer_unit()
    assert data.client_url == "https://juju-abc-0:2379"
    bag = data.to_databag()
    assert set(bag) == {
        "member-name",
        "hostname",
        "addresses",
        "peer-url",
        "client-url",
        "peer-csr",
    }
    assert etcd_peers.read_peer_unit({**bag, **JUJU_BAG}, UNIT) == data
    assert etcd_peers.read_peer_unit(dict(JUJU_BAG), UNIT) is None


def test_peer_unit_identity_is_enforced() -> None:
    bag = peer_unit().to_databag()
    with pytest.raises(RelationDataError, match="member-name"):
        etcd_peers.read_peer_unit(bag, "etcd/1")
    with pytest.raises(RelationDataError, match=r"peer-csr.*common name"):
        etcd_peers.read_peer_unit({**bag, "peer-csr": json.dumps(csr_for(OTHER_ID))}, UNIT)
    no_localhost = identity(UNIT, o=["kaji:etcd-members"], dns=[HOST], ips=["10.0.0.1"])
    with pytest.raises(RelationDataError, match=r"peer-csr.*localhost"):
        etcd_peers.read_peer_unit({**bag, "peer-csr": json.dumps(csr_for(no_localhost))}, UNIT)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("peer-url", "http://10.0.0.1:2380", "https"),
        ("peer-url", "https://10.0.0.99:2380", "not this unit's"),
        ("client-url", "https://elsewhere:2379", "not this unit's"),
        ("member-name", "Etcd_0", "member name"),
        ("hostname", "JUJU", "DNS-1123"),
        ("addresses", ["10.0.0.1", "x"], "not an IP"),
    ],
)
def test_peer_unit_validation(key: str, value: object, message: str) -> None:
    bag = {**peer_unit().to_databag(), key: json.dumps(value)}
    with pytest.raises(RelationDataError, match=rf"'{key}'.*{message}"):
        etcd_peers.read_peer_unit(bag, UNIT)


def test_peer_app_round_trip() -> None:
    data = peer_app()
    assert data.initial_cluster() == "etcd-0=https://10.0.0.1:2380,etcd-1=https://10.0.0.2:2380"
    assert etcd_peers.read_peer_app(data.to_databag()) == data
    assert data.certificate_for(UNIT) == cert_for(MEMBER_ID)
    assert etcd_peers.read_peer_app({}) is None
    info = pki.read_certificate(data.certificate_for(UNIT) or "")
    assert "127.0.0.1" in info.identity.ip_addresses


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cluster-state", "bootstrapping", "one of"),
        ("cluster-token", "a b", "1-128"),
        ("cluster-token", "", "1-128"),
        ("members", {"etcd-0": "http://10.0.0.1:2380"}, "https"),
        ("members", {"etcd/0": "https://10.0.0.1:2380"}, "member name"),
        ("members", ["etcd-0"], "object"),
        ("certificates", {"etcd/1": "CERT"}, "PEM"),
    ],
)
def test_peer_app_validation(key: str, value: object, message: str) -> None:
    bag = {**peer_app().to_databag(), key: json.dumps(value)}
    with pytest.raises(RelationDataError, match=rf"'{key}.*{message}"):
        etcd_peers.read_peer_app(bag)


def test_peer_app_certificates_must_be_member_certificates() -> None:
    bag = peer_app().to_databag()
    for certificates in ({UNIT: cert_for(OTHER_ID)}, {UNIT: ca().cert_pem}):
        with pytest.raises(RelationDataError, match="certificates"):
            etcd_peers.read_peer_app({**bag, "certificates": json.dumps(certificates)})


def test_ca_cert_is_public_only() -> None:
    with pytest.raises(RelationDataError, match="private key"):
        etcd_peers.EtcdPeerApp(
            ca_cert=ca().key_pem, cluster_token="t", cluster_state="new"
        ).to_databag()
    with pytest.raises(RelationDataError, match=r"ca-cert.*private key"):
        etcd_peers.read_peer_app({**peer_app().to_databag(), "ca-cert": json.dumps(ca().key_pem)})


@FUZZ
@given(random_databags(list(peer_unit().to_databag())))
def test_random_peer_unit_databags(bag: dict[str, str]) -> None:
    result = read_safely(lambda b: etcd_peers.read_peer_unit(b, UNIT), bag)
    assert result is None or isinstance(result, (RelationDataError, etcd_peers.EtcdPeerUnit))


@FUZZ
@given(mutated_databags(peer_unit().to_databag(), [csr_for(OTHER_ID), cert_for(MEMBER_ID)]))
def test_mutated_peer_unit_databags(bag: dict[str, str]) -> None:
    result = read_safely(lambda b: etcd_peers.read_peer_unit(b, UNIT), bag)
    if isinstance(result, etcd_peers.EtcdPeerUnit):
        assert etcd_peers.read_peer_unit(result.to_databag(), UNIT) == result


@FUZZ
@given(random_databags(list(peer_app().to_databag())))
def test_random_peer_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(etcd_peers.read_peer_app, bag)
    assert result is None or isinstance(result, (RelationDataError, etcd_peers.EtcdPeerApp))


@FUZZ
@given(mutated_databags(peer_app().to_databag(), [csr_for(MEMBER_ID), cert_for(OTHER_ID)]))
def test_mutated_peer_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(etcd_peers.read_peer_app, bag)
    if isinstance(result, etcd_peers.EtcdPeerApp):
        assert etcd_peers.read_peer_app(result.to_databag()) == result

from __future__ import annotations

import dataclasses
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
#: What Juju itself writes into etcd/0's bag.
JUJU_OF_UNIT = {
    "ingress-address": "10.0.0.1",
    "egress-subnets": "10.0.0.1/32",
    "private-address": "10.0.0.1",
}


def peer_unit() -> etcd_peers.EtcdPeerUnit:
    return etcd_peers.EtcdPeerUnit(
        member_name="etcd-0",
        hostname=HOST,
        addresses=ADDRESSES,
        peer_url="https://10.0.0.1:2380",
        client_url="https://10.0.0.1:2379/",
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
    assert data.client_url == "https://10.0.0.1:2379"
    bag = data.to_databag()
    assert set(bag) == {
        "member-name",
        "hostname",
        "addresses",
        "peer-url",
        "client-url",
        "peer-csr",
    }
    assert etcd_peers.read_peer_unit({**bag, **JUJU_OF_UNIT}, UNIT) == data
    assert etcd_peers.read_peer_unit(dict(JUJU_BAG), UNIT) is None


def test_member_id_round_trip_and_validation() -> None:
    data = peer_unit().with_member_id("8e9e05c52164694d")
    bag = {**data.to_databag(), **JUJU_OF_UNIT}
    assert json.loads(bag["member-id"]) == "8e9e05c52164694d"
    assert etcd_peers.read_peer_unit(bag, UNIT) == data
    assert etcd_peers.read_member_id(bag) == "8e9e05c52164694d"
    assert "member-id" not in data.with_member_id(None).to_databag()
    assert etcd_peers.read_member_id(JUJU_OF_UNIT) is None
    for bad in ("8E9E", "", "x" * 17, 12):
        bag["member-id"] = json.dumps(bad)
        with pytest.raises(RelationDataError, match="member-id"):
            etcd_peers.read_member_id(bag)
        with pytest.raises(RelationDataError, match="member-id"):
            etcd_peers.read_peer_unit(bag, UNIT)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # A URL on the unit's hostname is in the contract, but not an address Juju reports.
        ("client-url", "https://juju-abc-0:2379", "client-url.*is not its address 10.0.0.1"),
        ("peer-url", "https://juju-abc-0:2380", "peer-url.*is not its address 10.0.0.1"),
    ],
)
def test_urls_must_be_on_an_address_juju_reports(key: str, value: str, message: str) -> None:
    bag = {**peer_unit().to_databag(), key: json.dumps(value), **JUJU_OF_UNIT}
    with pytest.raises(RelationDataError, match=message):
        etcd_peers.read_peer_unit(bag, UNIT)
    assert etcd_peers.read_peer_unit(bag, UNIT, own=True) is not None  # its own data: trusted


def test_addresses_must_be_ones_juju_reports() -> None:
    bag = peer_unit().to_databag()
    with pytest.raises(RelationDataError, match=r"ingress-address.*no address"):
        etcd_peers.read_peer_unit(bag, UNIT)
    elsewhere = {**bag, **JUJU_OF_UNIT, "ingress-address": "10.0.0.7", "private-address": ""}
    with pytest.raises(
        RelationDataError, match=r"'addresses'.*10.0.0.1 is not its address 10.0.0.7"
    ):
        etcd_peers.read_peer_unit(elsewhere, UNIT)


def test_peer_unit_identity_is_enforced() -> None:
    bag = {**peer_unit().to_databag(), **JUJU_OF_UNIT}
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
    bag = {**peer_unit().to_databag(), key: json.dumps(value), **JUJU_OF_UNIT}
    with pytest.raises(RelationDataError, match=rf"'{key}'.*{message}"):
        etcd_peers.read_peer_unit(bag, UNIT)


def test_peer_app_round_trip() -> None:
    data = peer_app()
    assert data.members == {"etcd-0": "https://10.0.0.1:2380", "etcd-1": "https://10.0.0.2:2380"}
    assert etcd_peers.read_peer_app(data.to_databag()) == data
    ids = dataclasses.replace(data, member_ids={"etcd-0": "1001"}, recorded_only=True)
    bag = ids.to_databag()
    assert (json.loads(bag["member-ids"]), json.loads(bag["recorded-only"])) == (
        {"etcd-0": "1001"},
        True,
    )
    assert etcd_peers.read_peer_app(bag) == ids
    older = {k: v for k, v in bag.items() if k not in ("member-ids", "recorded-only")}
    assert etcd_peers.read_peer_app(older) == data  # both keys are optional
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
        ("member-ids", {"etcd-0": "XYZ"}, "hex"),
        ("member-ids", {"etcd/0": "1001"}, "member name"),
        ("member-ids", ["1001"], "object"),
        ("recorded-only", "yes", "boolean"),
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
@given(
    mutated_databags(
        {**peer_unit().to_databag(), **JUJU_OF_UNIT}, [csr_for(OTHER_ID), cert_for(MEMBER_ID)]
    )
)
def test_mutated_peer_unit_databags(bag: dict[str, str]) -> None:
    result = read_safely(lambda b: etcd_peers.read_peer_unit(b, UNIT), bag)
    if isinstance(result, etcd_peers.EtcdPeerUnit):
        again = {**result.to_databag(), **{k: bag[k] for k in JUJU_OF_UNIT if k in bag}}
        assert etcd_peers.read_peer_unit(again, UNIT) == result


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

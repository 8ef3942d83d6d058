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
from kaji.interfaces import RelationDataError, etcd

UNIT = "control-plane/0"
CLIENT = etcd.expected_client_identity(UNIT)
OTHER = etcd.expected_client_identity("control-plane/1")


def provider_app() -> etcd.EtcdProviderApp:
    return etcd.EtcdProviderApp(
        client_urls=("https://10.0.0.3:2379", "https://10.0.0.1:2379/", "https://10.0.0.2:2379"),
        ca_cert=ca().cert_pem,
        certificates={
            "control-plane/1": cert_for(OTHER, pki.Profile.CLIENT),
            UNIT: cert_for(CLIENT, pki.Profile.CLIENT),
        },
    )


def test_expected_client_identity() -> None:
    expected = pki.Identity.of("control-plane/0", organizations=["kaji:etcd-clients"])
    assert expected == CLIENT
    assert not CLIENT.dns_names
    assert not CLIENT.ip_addresses
    with pytest.raises(RelationDataError):
        etcd.expected_client_identity("control-plane")


def test_requirer_unit_round_trip() -> None:
    data = etcd.EtcdRequirerUnit(client_csr=csr_for(CLIENT))
    bag = data.to_databag()
    assert bag == {"client-csr": json.dumps(csr_for(CLIENT))}
    assert etcd.EtcdRequirerUnit.from_databag(bag) == data
    assert etcd.read_requirer_unit({**bag, **JUJU_BAG}, UNIT) == data


def test_requirer_csr_for_another_unit_is_refused() -> None:
    bag = etcd.EtcdRequirerUnit(client_csr=csr_for(OTHER)).to_databag()
    with pytest.raises(RelationDataError, match=r"client-csr.*common name"):
        etcd.read_requirer_unit(bag, UNIT)
    wrong_o = identity(UNIT, o=["system:masters"])
    with pytest.raises(RelationDataError, match="organization"):
        etcd.read_requirer_unit({"client-csr": json.dumps(csr_for(wrong_o))}, UNIT)


def test_empty_databags_mean_not_ready() -> None:
    assert etcd.read_requirer_unit({}, UNIT) is None
    assert etcd.read_requirer_unit(dict(JUJU_BAG), UNIT) is None
    assert etcd.read_provider_app({}) is None
    with pytest.raises(RelationDataError, match="missing"):
        etcd.EtcdProviderApp.from_databag({})


def test_provider_app_round_trip_and_normalisation() -> None:
    data = provider_app()
    assert data.client_urls == (
        "https://10.0.0.1:2379",
        "https://10.0.0.2:2379",
        "https://10.0.0.3:2379",
    )
    assert list(data.certificates) == ["control-plane/0", "control-plane/1"]
    bag = data.to_databag()
    assert set(bag) == {"client-urls", "ca-cert", "certificates"}
    assert etcd.read_provider_app(bag) == data
    assert data.certificate_for(UNIT) == cert_for(CLIENT, pki.Profile.CLIENT)
    assert data.certificate_for("control-plane/7") is None
    pki.verify_chain(data.certificate_for(UNIT) or "", data.ca_cert, pki.Profile.CLIENT)


def test_provider_app_without_certificates_yet() -> None:
    data = etcd.EtcdProviderApp(client_urls=("https://10.0.0.1:2379",), ca_cert=ca().cert_pem)
    assert etcd.read_provider_app(data.to_databag()) == data


def test_provider_app_refuses_http_and_bad_certificates() -> None:
    bag = provider_app().to_databag()
    with pytest.raises(RelationDataError, match=r"client-urls.*https"):
        etcd.read_provider_app({**bag, "client-urls": '["http://10.0.0.1:2379"]'})
    with pytest.raises(RelationDataError, match=r"client-urls.*at least one"):
        etcd.read_provider_app({**bag, "client-urls": "[]"})
    with pytest.raises(RelationDataError, match=r"ca-cert.*expected a CA"):
        etcd.read_provider_app({**bag, "ca-cert": json.dumps(cert_for(CLIENT))})
    swapped = {UNIT: cert_for(OTHER, pki.Profile.CLIENT)}
    with pytest.raises(RelationDataError, match=r"'certificates\[control-plane/0\]'"):
        etcd.read_provider_app({**bag, "certificates": json.dumps(swapped)})
    with pytest.raises(RelationDataError, match="not a unit name"):
        etcd.read_provider_app({**bag, "certificates": json.dumps({"cp": "x"})})


def test_private_key_never_written() -> None:
    with pytest.raises(RelationDataError, match="private key"):
        etcd.EtcdProviderApp(
            client_urls=("https://10.0.0.1:2379",), ca_cert=ca().cert_pem + ca().key_pem
        )


@FUZZ
@given(random_databags(["client-csr"]))
def test_random_requirer_databags(bag: dict[str, str]) -> None:
    result = read_safely(lambda b: etcd.read_requirer_unit(b, UNIT), bag)
    assert result is None or isinstance(result, (RelationDataError, etcd.EtcdRequirerUnit))


@FUZZ
@given(mutated_databags({"client-csr": json.dumps(csr_for(CLIENT))}, [csr_for(OTHER)]))
def test_broken_requirer_databags_are_refused(bag: dict[str, str]) -> None:
    result = read_safely(lambda b: etcd.read_requirer_unit(b, UNIT), bag)
    assert isinstance(result, RelationDataError) or result is None


@FUZZ
@given(random_databags(["client-urls", "ca-cert", "certificates"]))
def test_random_provider_databags(bag: dict[str, str]) -> None:
    result = read_safely(etcd.read_provider_app, bag)
    assert result is None or isinstance(result, (RelationDataError, etcd.EtcdProviderApp))


@FUZZ
@given(
    mutated_databags(
        provider_app().to_databag(), [csr_for(CLIENT), cert_for(OTHER), ca().cert_pem]
    )
)
def test_mutated_provider_databags(bag: dict[str, str]) -> None:
    result = read_safely(etcd.read_provider_app, bag)
    if isinstance(result, etcd.EtcdProviderApp):
        assert etcd.read_provider_app(result.to_databag()) == result

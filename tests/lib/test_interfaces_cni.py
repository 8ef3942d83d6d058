from __future__ import annotations

import json

import pytest
from hypothesis import given
from test_interfaces_support import FUZZ, JUJU_BAG, mutated_databags, random_databags, read_safely

from kaji.interfaces import RelationDataError, cni


def test_principal_round_trip() -> None:
    data = cni.CniPrincipalUnit(service_cidr="10.152.183.0/24", node_name="worker-0")
    bag = data.to_databag()
    assert bag == {"service-cidr": '"10.152.183.0/24"', "node-name": '"worker-0"'}
    assert cni.read_principal_unit({**bag, **JUJU_BAG}) == data
    assert cni.CniPrincipalUnit.from_databag(bag) == data


def test_cni_unit_round_trip_and_normalisation() -> None:
    data = cni.CniUnit(
        cluster_cidr="fd00:0:1::/56", cni_conf_path="/etc/cni/net.d", pod_subnet="fd00:0:1:5::/64"
    )
    assert data.cluster_cidr == "fd00:0:1::/56"
    assert data.pod_subnet == "fd00:0:1:5::/64"
    assert cni.read_cni_unit(data.to_databag()) == data


def test_empty_means_not_ready() -> None:
    assert cni.read_principal_unit(dict(JUJU_BAG)) is None
    assert cni.read_cni_unit({}) is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cluster-cidr", "10.1.0.1/16", "not a CIDR"),
        ("pod-subnet", "10.2.0.0/24", "not inside"),
        ("pod-subnet", "10.0.0.0/8", "not inside"),
        ("pod-subnet", "fd00::/64", "not inside"),
        ("cni-conf-path", "etc/cni/net.d", "absolute"),
        ("cni-conf-path", "/etc/cni/../net.d", "absolute"),
    ],
)
def test_cni_unit_validation(key: str, value: str, message: str) -> None:
    bag = {
        **cni.CniUnit("10.1.0.0/16", "/etc/cni/net.d", "10.1.3.0/24").to_databag(),
        key: json.dumps(value),
    }
    with pytest.raises(RelationDataError, match=rf"'{key}'.*{message}"):
        cni.read_cni_unit(bag)


def test_principal_validation() -> None:
    with pytest.raises(RelationDataError, match="node-name"):
        cni.read_principal_unit({"service-cidr": '"10.152.183.0/24"', "node-name": '"Worker 0"'})
    with pytest.raises(RelationDataError, match=r"node-name.*missing"):
        cni.read_principal_unit({"service-cidr": '"10.152.183.0/24"'})


@pytest.mark.parametrize(
    ("service_cidr", "cluster_cidr"),
    [("fd00::/112", "10.1.0.0/16"), ("10.152.183.0/24", "fd01::/48")],
)
def test_service_cidr_of_another_family_than_the_pod_network_is_refused(
    service_cidr: str, cluster_cidr: str
) -> None:
    bag = cni.CniPrincipalUnit(service_cidr, "worker-0").to_databag()
    assert cni.read_principal_unit(bag) is not None  # on its own it is a fine CIDR
    with pytest.raises(RelationDataError, match=rf"'service-cidr'.*{service_cidr}.*IP family"):
        cni.read_principal_unit(bag, cluster_cidr=cluster_cidr)
    same = cni.CniPrincipalUnit("10.152.183.0/24", "worker-0").to_databag()
    assert cni.read_principal_unit(same, cluster_cidr="10.1.0.0/16") is not None


@FUZZ
@given(random_databags(["service-cidr", "node-name"]))
def test_random_principal_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni.read_principal_unit, bag)
    assert result is None or isinstance(result, (RelationDataError, cni.CniPrincipalUnit))


@FUZZ
@given(random_databags(["cluster-cidr", "cni-conf-path", "pod-subnet"]))
def test_random_cni_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni.read_cni_unit, bag)
    assert result is None or isinstance(result, (RelationDataError, cni.CniUnit))


@FUZZ
@given(mutated_databags(cni.CniUnit("10.1.0.0/16", "/etc/cni/net.d", "10.1.3.0/24").to_databag()))
def test_mutated_cni_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni.read_cni_unit, bag)
    if isinstance(result, cni.CniUnit):  # a mutation that happens to be valid
        assert cni.read_cni_unit(result.to_databag()) == result


@FUZZ
@given(mutated_databags(cni.CniPrincipalUnit("10.152.183.0/24", "worker-0").to_databag()))
def test_mutated_principal_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni.read_principal_unit, bag)
    if isinstance(result, cni.CniPrincipalUnit):  # a mutation that happens to be valid
        assert cni.read_principal_unit(result.to_databag()) == result

from __future__ import annotations

import ipaddress
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_interfaces_support import FUZZ, JUJU_BAG, mutated_databags, random_databags, read_safely

from kaji.interfaces import RelationDataError, cni_network


def test_unit_round_trip() -> None:
    data = cni_network.CniNetworkUnit(node_name="worker-0", underlay_address="fd00:0::5")
    assert data.underlay_address == "fd00::5"
    bag = data.to_databag()
    assert bag == {"node-name": '"worker-0"', "underlay-address": '"fd00::5"'}
    assert cni_network.read_network_unit({**bag, **JUJU_BAG}) == data
    assert cni_network.read_network_unit(dict(JUJU_BAG)) is None
    with pytest.raises(RelationDataError, match="underlay-address"):
        cni_network.read_network_unit({**bag, "underlay-address": '"10.0.0.999"'})


@pytest.mark.parametrize(
    "claimed", ["10.0.0.8", "0.0.0.0", "255.255.255.255", "127.0.0.1", "10.152.183.1", "::"]
)
def test_a_peer_claim_must_be_the_address_juju_reports(claimed: str) -> None:
    honest = cni_network.CniNetworkUnit("worker-0", "10.0.0.9")
    bag = {**honest.to_databag(), **JUJU_BAG}  # Juju: ingress-address 10.0.0.9
    assert cni_network.read_peer_network_unit(bag) == honest
    lying = {**bag, "underlay-address": json.dumps(claimed)}
    with pytest.raises(RelationDataError, match=r"'underlay-address'.*not the unit's ingress"):
        cni_network.read_peer_network_unit(lying)
    assert cni_network.read_network_unit(lying) is not None  # the plain decoder does not check


def test_a_peer_claim_without_a_juju_address_is_refused() -> None:
    bag = cni_network.CniNetworkUnit("worker-0", "10.0.0.9").to_databag()
    with pytest.raises(RelationDataError, match="no ingress-address"):
        cni_network.read_peer_network_unit(bag)
    with pytest.raises(RelationDataError, match="no ingress-address"):
        cni_network.read_peer_network_unit({**bag, "ingress-address": "not-an-ip"})
    assert cni_network.read_peer_network_unit(dict(JUJU_BAG)) is None


def test_a_peer_claim_is_compared_as_an_address_not_as_text() -> None:
    bag = {**cni_network.CniNetworkUnit("worker-0", "fd00::9").to_databag()}
    assert cni_network.read_peer_network_unit({**bag, "ingress-address": "fd00:0:0::9"})


@FUZZ
@given(random_databags(["node-name", "underlay-address"]))
def test_random_peer_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni_network.read_peer_network_unit, bag)
    if isinstance(result, cni_network.CniNetworkUnit):
        assert ipaddress.ip_address(bag["ingress-address"]).compressed == result.underlay_address


def test_app_round_trip() -> None:
    data = cni_network.CniNetworkApp(
        "10.1.0.0/16", {"worker/1": "10.1.1.0/24", "control-plane/0": "10.1.0.0/24"}
    )
    assert list(data.allocations) == ["control-plane/0", "worker/1"]
    assert cni_network.read_network_app(data.to_databag()) == data
    assert data.subnet_for("worker/1") == "10.1.1.0/24"
    assert data.subnet_for("worker/2") is None
    assert cni_network.read_network_app({}) is None


@pytest.mark.parametrize(
    ("allocations", "message"),
    [
        ({"worker/0": "10.1.0.0/24", "worker/1": "10.1.0.128/25"}, "overlaps"),
        ({"worker/0": "10.1.0.0/16", "worker/1": "10.1.200.0/24"}, "overlaps"),
        ({"worker/0": "10.1.0.0/24", "worker/1": "10.1.0.0/24"}, "overlaps"),
        ({"worker/0": "10.2.0.0/24"}, "not inside"),
        ({"worker/0": "fd00::/64"}, "not inside"),
        ({"worker/0": "10.1.0.1/24"}, "not a CIDR"),
        ({"worker": "10.1.0.0/24"}, "unit name"),
    ],
)
def test_app_allocation_validation(allocations: dict[str, str], message: str) -> None:
    bag = {"cluster-cidr": '"10.1.0.0/16"', "allocations": json.dumps(allocations)}
    with pytest.raises(RelationDataError, match=rf"allocations.*{message}"):
        cni_network.read_network_app(bag)


def test_allocate_subnets_keeps_existing_and_gives_each_unit_its_numbered_subnet() -> None:
    existing = {"worker/1": "10.1.1.0/24", "worker/9": "10.1.0.0/24"}  # worker/9 departed
    units = ["worker/3", "worker/1", "worker/2"]
    result = cni_network.allocate_subnets("10.1.0.0/16", units, existing, 24)
    assert result == {
        "worker/1": "10.1.1.0/24",
        "worker/2": "10.1.2.0/24",
        "worker/3": "10.1.3.0/24",
    }


def test_allocate_subnets_falls_back_to_lowest_free_when_the_numbered_one_is_not_there() -> None:
    # worker/2's own subnet is held by worker/5 (a leftover); worker/7 is beyond the 4 subnets.
    existing = {"worker/5": "10.1.2.0/24"}
    result = cni_network.allocate_subnets(
        "10.1.0.0/22", ["worker/7", "worker/2", "worker/5"], existing, 24
    )
    assert result == {
        "worker/2": "10.1.0.0/24",
        "worker/5": "10.1.2.0/24",
        "worker/7": "10.1.1.0/24",
    }


def test_allocate_subnets_result_does_not_depend_on_arrival_order() -> None:
    units = [f"cni/{n}" for n in range(6)]
    tables = set()
    for order in ([0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 4, 2], [2, 4, 0, 5, 1, 3]):
        table: dict[str, str] = {}
        for n in order:  # one unit seen per hook
            seen = [*table, units[n]]
            table = cni_network.allocate_subnets("10.1.0.0/16", seen, table, 24)
        tables.add(tuple(sorted(table.items())))
    assert len(tables) == 1


def test_allocate_subnets_avoids_odd_sized_existing_and_runs_out() -> None:
    with pytest.raises(RelationDataError, match="no free /24"):  # a/0 holds the whole /23
        cni_network.allocate_subnets("10.1.0.0/23", ["a/0", "a/1"], {"a/0": "10.1.0.0/23"}, 24)
    with pytest.raises(RelationDataError, match="no free"):
        cni_network.allocate_subnets("10.1.0.0/24", ["a/0", "a/1"], {}, 24)
    with pytest.raises(RelationDataError, match="prefix-length"):
        cni_network.allocate_subnets("10.1.0.0/24", ["a/0"], {}, 16)
    mixed = cni_network.allocate_subnets("10.1.0.0/16", ["a/0", "a/1"], {"a/0": "10.1.0.0/25"}, 24)
    assert mixed == {"a/0": "10.1.0.0/25", "a/1": "10.1.1.0/24"}


def test_allocate_subnets_raises_the_typed_error_only_when_out_of_room() -> None:
    exhausted = cni_network.SubnetsExhaustedError
    with pytest.raises(exhausted) as raised:
        cni_network.allocate_subnets("10.1.0.0/24", ["a/0", "a/1"], {}, 24)
    assert (raised.value.key, raised.value.reason) == (
        "allocations",
        "10.1.0.0/24 has no free /24 left",
    )
    for bad in (
        lambda: cni_network.allocate_subnets("10.1.0.0/24", ["a/0"], {}, 16),  # does not fit
        lambda: cni_network.allocate_subnets(  # overlapping existing allocations
            "10.1.0.0/16", ["a/0", "a/1"], {"a/0": "10.1.0.0/23", "a/1": "10.1.1.0/24"}, 24
        ),
    ):
        with pytest.raises(RelationDataError) as refused:
            bad()
        assert not isinstance(refused.value, exhausted)


@FUZZ
@given(
    st.sets(st.integers(0, 40), max_size=30),
    st.dictionaries(st.integers(0, 40), st.integers(0, 255), max_size=10),
)
def test_allocations_are_always_disjoint_and_inside(units: set[int], seed: dict[int, int]) -> None:
    existing: dict[str, str] = {}
    taken: set[int] = set()
    for unit, block in seed.items():
        if block not in taken:
            taken.add(block)
            existing[f"worker/{unit}"] = f"10.1.{block}.0/24"
    names = [f"worker/{u}" for u in units]
    result = cni_network.allocate_subnets("10.1.0.0/16", names, existing, 24)
    assert sorted(result) == sorted(names)
    for name in names:
        if name in existing:
            assert result[name] == existing[name]
    app = cni_network.CniNetworkApp("10.1.0.0/16", result)  # validates disjoint and inside
    nets = [ipaddress.ip_network(c) for c in app.allocations.values()]
    assert len(set(nets)) == len(nets)


@FUZZ
@given(random_databags(["node-name", "underlay-address"]))
def test_random_unit_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni_network.read_network_unit, bag)
    assert result is None or isinstance(result, (RelationDataError, cni_network.CniNetworkUnit))


@FUZZ
@given(
    random_databags(["cluster-cidr", "allocations"]),
)
def test_random_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni_network.read_network_app, bag)
    assert result is None or isinstance(result, (RelationDataError, cni_network.CniNetworkApp))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([f"w/{i}" for i in range(6)]) | st.text(max_size=8),
        st.builds(
            lambda a, b, p: f"10.{a}.{b}.0/{p}",
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(8, 26),
        )
        | st.text(max_size=20),
        max_size=6,
    )
)
def test_overlapping_or_outside_allocations_raise_only_relation_data_error(
    allocations: dict[str, str],
) -> None:
    bag = {"cluster-cidr": '"10.0.0.0/14"', "allocations": json.dumps(allocations)}
    result = read_safely(cni_network.read_network_app, bag)
    if isinstance(result, cni_network.CniNetworkApp):
        nets = sorted(ipaddress.ip_network(c) for c in result.allocations.values())
        for a, b in itertools.pairwise(nets):
            assert not a.overlaps(b)


@FUZZ
@given(
    mutated_databags(cni_network.CniNetworkApp("10.1.0.0/16", {"w/0": "10.1.0.0/24"}).to_databag())
)
def test_mutated_app_databags(bag: dict[str, str]) -> None:
    result = read_safely(cni_network.read_network_app, bag)
    if isinstance(result, cni_network.CniNetworkApp):
        assert cni_network.read_network_app(result.to_databag()) == result

"""Subnet allocation by the leader: concurrent joins, departures, leader change, exhaustion."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from builders import (
    allocations,
    app_bag,
    claim,
    context,
    own,
    peer_bag,
    peers,
    principal,
    state,
)
from kaji_cni import allocation
from ops import testing

from kaji.interfaces import RelationDataError
from kaji.interfaces.cni_network import SubnetsExhaustedError


def _disjoint(subnets: dict[str, str]) -> bool:
    nets = [ipaddress.ip_network(s) for s in subnets.values()]
    return not any(a.overlaps(b) for a, b in itertools.combinations(nets, 2))


def test_leader_allocates_itself_and_every_joined_peer(ctx: testing.Context) -> None:
    network = peers({1: peer_bag("node-1", "192.168.1.11"), 2: {}})
    out = ctx.run(ctx.on.leader_elected(), state(principal(), network, leader=True))
    assert allocations(out) == {
        "cni/0": "10.1.0.0/24",
        "cni/1": "10.1.1.0/24",
        "cni/2": "10.1.2.0/24",
    }
    assert out.unit_status.name == "active"


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3])))
def test_concurrent_joins_in_any_order_get_distinct_stable_subnets(
    ctx: testing.Context, order: tuple[int, ...]
) -> None:
    network = peers(app=app_bag(allocations={"cni/0": "10.1.0.0/24"}))
    out = state(principal(), network, leader=True)
    seen: dict[int, dict[str, str]] = {}
    for unit in order:
        relation = out.get_relation(2)
        joined = {**relation.peers_data, unit: peer_bag(f"node-{unit}", f"192.168.1.{unit}")}
        relation = testing.PeerRelation(
            "network",
            id=2,
            peers_data=joined,
            local_app_data=relation.local_app_data,
            local_unit_data=relation.local_unit_data,
        )
        out = ctx.run(
            ctx.on.relation_joined(relation, remote_unit=unit),
            testing.State(
                relations=[out.get_relation(1), relation],
                leader=True,
                networks=out.networks,
            ),
        )
        got = allocations(out)
        assert _disjoint(got)
        for earlier in seen.values():  # nothing handed out before ever moves
            assert {u: got[u] for u in earlier} == earlier
        seen[unit] = got
    # Whatever the arrival order, each unit cni/N got the N-th subnet: the same final table.
    assert allocations(out) == {f"cni/{u}": f"10.1.{u}.0/24" for u in range(4)}


def test_units_joining_before_the_leader_runs_are_ordered_by_name(ctx: testing.Context) -> None:
    joined = {u: peer_bag(f"node-{u}", f"192.168.1.{u}") for u in (3, 1, 2)}
    network = peers(joined, app=app_bag(allocations={"cni/0": "10.1.0.0/24"}))
    out = ctx.run(
        ctx.on.relation_joined(network, remote_unit=3), state(principal(), network, leader=True)
    )
    assert allocations(out) == {
        "cni/0": "10.1.0.0/24",
        "cni/1": "10.1.1.0/24",
        "cni/2": "10.1.2.0/24",
        "cni/3": "10.1.3.0/24",
    }


def test_rerun_and_config_reread_keep_allocations_byte_identical(ctx: testing.Context) -> None:
    network = peers({1: peer_bag("node-1", "192.168.1.11")})
    first = ctx.run(ctx.on.config_changed(), state(principal(), network, leader=True))
    again = ctx.run(ctx.on.update_status(), first)
    assert again.get_relation(2).local_app_data == first.get_relation(2).local_app_data
    # A smaller node-prefix applies to new nodes only; existing subnets stay as they are.
    reread = ctx.run(
        ctx.on.config_changed(),
        testing.State(
            relations=again.relations,
            leader=True,
            networks=again.networks,
            config={"node-prefix": 26},
        ),
    )
    assert allocations(reread) == allocations(first)


def test_new_leader_keeps_what_the_old_leader_allocated(sandbox: object) -> None:
    existing = {"cni/0": "10.1.7.0/24", "cni/1": "10.1.0.0/24", "cni/2": "10.1.3.0/24"}
    ctx = context(unit_id=1)
    network = peers(
        {0: peer_bag("node-0", "192.168.1.10"), 2: peer_bag("node-2", "192.168.1.12")},
        app=app_bag(allocations=existing),
    )
    out = ctx.run(ctx.on.leader_elected(), state(principal("node-1"), network, leader=True))
    assert allocations(out) == existing
    assert out.get_relation(2).local_app_data == network.local_app_data
    assert out.unit_status == testing.ActiveStatus(
        "vxlan: pod subnet 10.1.0.0/24, 2 peer(s); sandbox: kernel not programmed,"
        " plan in /var/lib/kaji/cni/dataplane.json"
    )


def test_departed_unit_releases_its_subnet_for_the_next_one(ctx: testing.Context) -> None:
    existing = {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24", "cni/2": "10.1.2.0/24"}
    # Juju no longer lists the departing unit during relation-departed.
    network = peers({2: peer_bag("node-2", "192.168.1.12")}, app=app_bag(allocations=existing))
    out = ctx.run(
        ctx.on.relation_departed(network, remote_unit=1, departing_unit=1),
        state(principal(), network, leader=True),
    )
    assert allocations(out) == {"cni/0": "10.1.0.0/24", "cni/2": "10.1.2.0/24"}

    relation = out.get_relation(2)
    joined = testing.PeerRelation(
        "network",
        id=2,
        peers_data={**relation.peers_data, 3: peer_bag("node-3", "192.168.1.13")},
        local_app_data=relation.local_app_data,
        local_unit_data=relation.local_unit_data,
    )
    out = ctx.run(
        ctx.on.relation_joined(joined, remote_unit=3),
        testing.State(relations=[out.get_relation(1), joined], leader=True, networks=out.networks),
    )
    # cni/3 takes its own numbered subnet; cni/1's stays free for whoever needs it.
    assert allocations(out) == {
        "cni/0": "10.1.0.0/24",
        "cni/2": "10.1.2.0/24",
        "cni/3": "10.1.3.0/24",
    }


def test_departure_seen_by_a_still_listed_unit_is_not_counted(ctx: testing.Context) -> None:
    existing = {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24"}
    network = peers({1: peer_bag("node-1", "192.168.1.11")}, app=app_bag(allocations=existing))
    out = ctx.run(
        ctx.on.relation_departed(network, remote_unit=1, departing_unit=1),
        state(principal(), network, leader=True),
    )
    assert allocations(out) == {"cni/0": "10.1.0.0/24"}


def test_a_leader_that_is_itself_leaving_releases_nothing(sandbox: object) -> None:
    # (unit 3, not 0: ops.testing cannot name unit 0 as the departing unit)
    existing = {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24", "cni/3": "10.1.2.0/24"}
    ctx = context(unit_id=3)
    # The dying unit sees every other unit depart, one by one.
    network = peers({0: peer_bag("node-0", "192.168.1.10")}, app=app_bag(allocations=existing))
    out = ctx.run(
        ctx.on.relation_departed(network, remote_unit=1, departing_unit=3),
        state(principal("node-3"), network, leader=True),
    )
    assert allocations(out) == existing
    assert out.unit_status == testing.MaintenanceStatus("leaving the pod network")


def test_exhaustion_blocks_only_the_unit_left_without_a_subnet(sandbox: object) -> None:
    config = {"cidr": "10.1.0.0/23"}
    network = peers({1: peer_bag("node-1", "192.168.1.11"), 2: peer_bag("node-2", "192.168.1.12")})
    ctx = context(0)
    out = ctx.run(ctx.on.config_changed(), state(principal(), network, leader=True, config=config))
    assert allocations(out) == {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24"}
    assert out.unit_status.name == "active"
    app = out.get_relation(2).local_app_data

    for unit_id, expected in ((1, "active"), (2, "blocked")):
        unit_ctx = context(unit_id)
        others = {u: peer_bag(f"node-{u}", f"192.168.1.1{u}") for u in (0, 1, 2) if u != unit_id}
        got = unit_ctx.run(
            unit_ctx.on.update_status(),
            state(principal(f"node-{unit_id}"), peers(others, app=app), config=config),
        )
        assert got.unit_status.name == expected
    assert got.unit_status == testing.BlockedStatus(
        "no free /24 left in 10.1.0.0/23 for this node; raise node-prefix for smaller node"
        " subnets or remove a node"
    )


def test_exhausted_unit_gets_a_subnet_with_a_longer_node_prefix(sandbox: object) -> None:
    # 10.1.0.0/23 holds cni/0's /24; cni/1 and cni/2 still fit as /25s. cni/2 gets its own
    # numbered /25; cni/1's numbered one (10.1.0.128/25) is inside cni/0's, so it takes the
    # lowest free one.
    config = {"cidr": "10.1.0.0/23", "node-prefix": 25}
    network = peers(
        {1: peer_bag("node-1", "192.168.1.11"), 2: peer_bag("node-2", "192.168.1.12")},
        app=app_bag("10.1.0.0/23", {"cni/0": "10.1.0.0/24"}),
    )
    ctx = context(0)
    out = ctx.run(ctx.on.config_changed(), state(principal(), network, leader=True, config=config))
    assert allocations(out) == {
        "cni/0": "10.1.0.0/24",
        "cni/1": "10.1.1.128/25",
        "cni/2": "10.1.1.0/25",
    }


def test_non_leader_waits_for_its_subnet(ctx: testing.Context) -> None:
    network = peers({1: peer_bag("node-1", "192.168.1.11")})
    out = ctx.run(ctx.on.relation_joined(network, remote_unit=1), state(principal(), network))
    assert out.unit_status == testing.WaitingStatus(
        "waiting for the leader to allocate pod subnets"
    )
    assert own(out.get_relation(2).local_unit_data) == claim("node-0", "192.168.1.10")
    assert out.get_relation(2).local_app_data == {}


def test_malformed_peer_data_is_ignored_not_fatal(ctx: testing.Context) -> None:
    network = peers({1: {"node-name": "not json"}, 2: peer_bag("node-2", "192.168.1.12")})
    out = ctx.run(ctx.on.update_status(), state(principal(), network, leader=True))
    assert set(allocations(out)) == {"cni/0", "cni/1", "cni/2"}
    assert out.unit_status.name == "active"
    assert "1 peer(s)" in out.unit_status.message


def test_leader_allocates_even_before_its_own_principal_has_spoken(
    ctx: testing.Context,
) -> None:
    silent = testing.SubordinateRelation("cni", remote_app_name="worker", id=1)
    network = peers({1: peer_bag("node-1", "192.168.1.11")})
    out = ctx.run(ctx.on.leader_elected(), state(silent, network, leader=True))
    assert allocations(out) == {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24"}
    assert out.unit_status == testing.WaitingStatus("waiting for the node name from worker/0")
    assert own(out.get_relation(1).local_unit_data) == {}


def test_exhaustion_is_recognised_by_its_type_not_its_wording(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = allocation.allocate_subnets

    def reworded(cidr: str, units: list[str], existing: dict, prefix: int) -> dict[str, str]:
        try:
            return real(cidr, units, existing, prefix)
        except SubnetsExhaustedError:
            raise SubnetsExhaustedError("allocations", "out of room") from None

    monkeypatch.setattr(allocation, "allocate_subnets", reworded)
    result = allocation.allocate("10.1.0.0/23", ["a/0", "a/1", "a/2"], {}, 24)
    assert result == allocation.Allocation({"a/0": "10.1.0.0/24", "a/1": "10.1.1.0/24"}, ("a/2",))


def test_malformed_allocation_input_is_raised_not_taken_for_exhaustion() -> None:
    overlapping = {"a/0": "10.1.0.0/23", "a/1": "10.1.1.0/24"}
    with pytest.raises(RelationDataError, match="overlaps"):
        allocation.allocate("10.1.0.0/16", ["a/0", "a/1", "a/2"], overlapping, 24)
    assert not allocation.is_exhausted("10.1.0.0/16", overlapping, "a/2", 24)

"""A peer's underlay-address is trusted only when it is the address Juju reports for that unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import allocations, app_bag, claim, juju_keys, peer_bag, peers, principal, state
from ops import testing

PLAN = "var/lib/kaji/cni/dataplane.json"
EXISTING = {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24", "cni/2": "10.1.2.0/24"}
HOST_GW = {"backend": "host-gw"}


def _plan(sandbox: Path) -> dict:
    return json.loads((sandbox / PLAN).read_text())


@pytest.mark.parametrize(
    "claimed",
    [
        "192.168.1.12",  # another node's address: its pods would be routed to cni/2
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "10.152.183.1",  # a service IP
        "192.168.1.10",  # this very node
    ],
)
def test_a_claim_that_is_not_the_units_juju_address_is_not_routed(
    ctx: testing.Context, sandbox: Path, claimed: str
) -> None:
    network = peers(
        {
            1: peer_bag("node-1", claimed, ingress="192.168.1.11"),
            2: peer_bag("node-2", "192.168.1.12"),
        },
        app=app_bag(allocations=EXISTING),
    )
    out = ctx.run(ctx.on.update_status(), state(principal(), network, config=HOST_GW))
    assert out.unit_status == testing.ActiveStatus(
        "host-gw: pod subnet 10.1.0.0/24, 1 peer(s); ignoring cni/1's underlay-address"
        " (see debug-log); sandbox: kernel not programmed, plan in"
        " /var/lib/kaji/cni/dataplane.json"
    )
    assert _plan(sandbox)["routes"] == [
        {"dst": "10.1.2.0/24", "gateway": "192.168.1.12", "dev": None, "onlink": False}
    ]


def test_an_ignored_claim_is_left_out_of_the_vxlan_entries_too(
    ctx: testing.Context, sandbox: Path
) -> None:
    network = peers(
        {
            1: peer_bag("node-1", "192.168.1.12", ingress="192.168.1.11"),
            2: peer_bag("node-2", "192.168.1.12"),
        },
        app=app_bag(allocations=EXISTING),
    )
    ctx.run(ctx.on.update_status(), state(principal(), network))
    plan = _plan(sandbox)
    assert [p["underlay"] for p in plan["vxlan_peers"]] == ["192.168.1.12"]
    assert [r["dst"] for r in plan["routes"]] == ["10.1.2.0/24"]


def test_without_a_juju_address_the_claim_is_not_trusted(
    ctx: testing.Context, sandbox: Path
) -> None:
    network = peers(
        {1: claim("node-1", "192.168.1.11"), 2: peer_bag("node-2", "192.168.1.12")},
        app=app_bag(allocations=EXISTING),
    )
    out = ctx.run(ctx.on.update_status(), state(principal(), network))
    assert "1 peer(s); ignoring cni/1's underlay-address" in out.unit_status.message
    assert [p["underlay"] for p in _plan(sandbox)["vxlan_peers"]] == ["192.168.1.12"]


def test_the_same_address_written_differently_is_accepted(
    ctx: testing.Context, sandbox: Path
) -> None:
    bag = {**claim("node-1", "fd00::11"), **juju_keys("fd00:0:0::11")}
    network = peers({1: bag}, app=app_bag(allocations=EXISTING))
    out = ctx.run(ctx.on.update_status(), state(principal(), network))
    assert out.unit_status.message.startswith("vxlan: pod subnet 10.1.0.0/24, 1 peer(s); sandbox")
    assert [p["underlay"] for p in _plan(sandbox)["vxlan_peers"]] == ["fd00::11"]


def test_many_ignored_peers_are_counted_not_all_named(ctx: testing.Context) -> None:
    units = {n: peer_bag(f"node-{n}", "0.0.0.0", ingress=f"192.168.1.{n}") for n in range(1, 6)}
    network = peers(
        units, app=app_bag(allocations={f"cni/{n}": f"10.1.{n}.0/24" for n in range(6)})
    )
    out = ctx.run(ctx.on.update_status(), state(principal(), network))
    assert out.unit_status.message.startswith(
        "vxlan: pod subnet 10.1.0.0/24, 0 peer(s); ignoring cni/1's underlay-address,"
        " cni/2's underlay-address, cni/3's underlay-address and 2 more (see debug-log)"
    )


def test_the_leader_still_allocates_to_a_peer_whose_claim_it_ignores(
    ctx: testing.Context,
) -> None:
    network = peers({1: peer_bag("node-1", "0.0.0.0", ingress="192.168.1.11")})
    out = ctx.run(ctx.on.leader_elected(), state(principal(), network, leader=True))
    assert allocations(out) == {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24"}
    assert "ignoring cni/1's underlay-address" in out.unit_status.message

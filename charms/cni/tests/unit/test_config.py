"""Invalid config blocks before anything is touched; cidr is frozen once subnets exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import allocations, app_bag, files_under, own, peer_bag, peers, principal, state
from kaji_cni.config import DEFAULTS, CniConfig
from ops import testing


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("cidr", "10.1.0.1/16", "is not a network/prefix"),
        ("cidr", "fd00::/64", "only IPv4 pod networks are supported"),
        ("cidr", "10.1.0.0/30", "too small"),
        ("cidr", "0.0.0.0/0", "overlaps 0.0.0.0/8, which pods cannot use"),
        ("cidr", "127.0.0.0/16", "overlaps 127.0.0.0/8"),
        ("cidr", "169.254.0.0/16", "overlaps 169.254.0.0/16"),
        ("cidr", "224.0.0.0/16", "overlaps 224.0.0.0/4"),
        ("cidr", "255.255.255.0/24", "overlaps 240.0.0.0/4"),
        ("node-prefix", 8, "larger than the cluster cidr 10.1.0.0/16"),
        ("node-prefix", 29, "between 1 and 28"),
        ("backend", "geneve", "must be one of host-gw, vxlan"),
        ("mtu", 100, "between 1280 and 9216"),
        ("vni", 0, "between 1 and 16777215"),
        ("vxlan-port", 70000, "between 1 and 65535"),
    ],
)
def test_invalid_option_blocks_before_touching_anything(
    ctx: testing.Context, sandbox: Path, option: str, value: object, reason: str
) -> None:
    network = peers({1: peer_bag("node-1", "192.168.1.11")})
    before = state(principal(), network, leader=True, config={option: value})  # type: ignore[dict-item]
    out = ctx.run(ctx.on.config_changed(), before)
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(f"invalid config {option}: ")
    assert reason in out.unit_status.message
    assert files_under(sandbox) == {}
    assert out.get_relation(2).local_app_data == {}
    assert own(out.get_relation(2).local_unit_data) == {}
    assert own(out.get_relation(1).local_unit_data) == {}


def test_cidr_change_after_allocation_is_refused(ctx: testing.Context, sandbox: Path) -> None:
    existing = {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24"}
    network = peers({1: peer_bag("node-1", "192.168.1.11")}, app=app_bag(allocations=existing))
    settled = ctx.run(ctx.on.update_status(), state(principal(), network, leader=True))
    files = files_under(sandbox)
    out = ctx.run(
        ctx.on.config_changed(),
        testing.State(
            relations=settled.relations,
            leader=True,
            networks=settled.networks,
            config={"cidr": "10.2.0.0/16"},
        ),
    )
    assert out.unit_status == testing.BlockedStatus(
        "invalid config cidr: cannot change to 10.2.0.0/16 after pod subnets were allocated;"
        " set it back to 10.1.0.0/16"
    )
    assert out.get_relation(2).local_app_data == settled.get_relation(2).local_app_data
    assert files_under(sandbox) == files
    # Non-leaders refuse too.
    follower = ctx.run(
        ctx.on.config_changed(),
        testing.State(
            relations=settled.relations, networks=settled.networks, config={"cidr": "10.2.0.0/16"}
        ),
    )
    assert follower.unit_status.message.startswith("invalid config cidr: cannot change")


def test_cidr_change_before_any_allocation_is_taken(ctx: testing.Context) -> None:
    network = peers(app={"cluster-cidr": '"10.1.0.0/16"', "allocations": "{}"})
    out = ctx.run(
        ctx.on.config_changed(),
        state(principal(), network, leader=True, config={"cidr": "10.2.0.0/16"}),
    )
    assert allocations(out) == {"cni/0": "10.2.0.0/24"}
    assert out.unit_status.name == "active"


def test_vxlan_is_the_default_backend() -> None:
    # host-gw needs L2 adjacency (or a cloud routing pod subnets): not the default.
    assert CniConfig.from_options({}).backend == "vxlan"
    assert DEFAULTS["backend"] == "vxlan"

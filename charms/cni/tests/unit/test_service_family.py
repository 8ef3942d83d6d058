"""A service network of another IP family than the pod network is refused, not half-applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import app_bag, files_under, own, peer_bag, peers, state
from kaji_cni import dataplane
from ops import testing

from kaji.interfaces.cni import CniPrincipalUnit


def _principal(service_cidr: str) -> testing.SubordinateRelation:
    bag = CniPrincipalUnit(service_cidr, "node-0").to_databag()
    return testing.SubordinateRelation("cni", remote_app_name="worker", remote_unit_data=bag, id=1)


def test_an_ipv6_service_cidr_with_an_ipv4_pod_network_blocks_and_touches_nothing(
    ctx: testing.Context, sandbox: Path
) -> None:
    network = peers(
        {1: peer_bag("node-1", "192.168.1.11")},
        app=app_bag(allocations={"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24"}),
    )
    out = ctx.run(
        ctx.on.relation_changed(_principal("fd00::/112")), state(_principal("fd00::/112"), network)
    )
    assert out.unit_status == testing.BlockedStatus(
        "worker/0 sent invalid cni data: service-cidr (fd00::/112 is not of the pod network's"
        " IP family (IPv4: 10.1.0.0/16))"
    )
    assert files_under(sandbox) == {}
    assert own(out.get_relation(1).local_unit_data) == {}


def test_the_dataplane_never_mixes_families_in_one_rule() -> None:
    with pytest.raises(dataplane.DataplaneError, match="service-cidr fd00::/112"):
        dataplane.masquerade_rules("10.1.0.0/16", "fd00::/112")
    assert "-s 10.1.0.0/16 -d 10.152.183.0/24 -j RETURN" in dataplane.masquerade_rules(
        "10.1.0.0/16", "10.152.183.0/24"
    )

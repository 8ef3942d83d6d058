"""What one cni unit puts on its (sandboxed) machine and tells its principal and peers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import (
    SERVICE_CIDR,
    app_bag,
    claim,
    files_under,
    own,
    peer_bag,
    peers,
    principal,
    state,
)
from kaji_cni import dataplane
from ops import testing

from kaji.interfaces.cni import CniUnit

CONFLIST = "etc/cni/net.d/10-kaji.conflist"
PLAN = "var/lib/kaji/cni/dataplane.json"
EXISTING = {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24", "cni/2": "10.1.2.0/24"}


def _network() -> testing.PeerRelation:
    return peers(
        {1: peer_bag("node-1", "192.168.1.11"), 2: peer_bag("node-2", "192.168.1.12")},
        app=app_bag(allocations=EXISTING),
    )


def test_default_backend_is_vxlan(ctx: testing.Context, sandbox: Path) -> None:
    out = ctx.run(ctx.on.update_status(), state(principal(), _network()))
    assert out.unit_status.message.startswith("vxlan: pod subnet 10.1.0.0/24, 2 peer(s)")
    plan = json.loads((sandbox / PLAN).read_text())
    assert plan["backend"] == "vxlan"
    assert plan["vxlan"]["local"] == "192.168.1.10"
    assert json.loads((sandbox / CONFLIST).read_text())["plugins"][0]["mtu"] == 1450


def test_node_is_rendered_published_and_recorded_not_programmed(
    ctx: testing.Context, sandbox: Path
) -> None:
    host_gw = {"backend": "host-gw"}
    out = ctx.run(ctx.on.update_status(), state(principal(), _network(), config=host_gw))
    assert out.unit_status == testing.ActiveStatus(
        "host-gw: pod subnet 10.1.0.0/24, 2 peer(s); sandbox: kernel not programmed,"
        " plan in /var/lib/kaji/cni/dataplane.json"
    )
    conflist = json.loads((sandbox / CONFLIST).read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "loopback"]
    bridge = conflist["plugins"][0]
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}]]
    assert bridge["mtu"] == 1500
    assert "dataDir" not in bridge["ipam"]

    plan = json.loads((sandbox / PLAN).read_text())
    assert plan["routes"] == [
        {"dst": "10.1.1.0/24", "gateway": "192.168.1.11", "dev": None, "onlink": False},
        {"dst": "10.1.2.0/24", "gateway": "192.168.1.12", "dev": None, "onlink": False},
    ]
    assert f"-s 10.1.0.0/16 -d {SERVICE_CIDR} -j RETURN" in plan["masquerade"]

    # The principal learns the pod CIDR, the CNI config path and this node's subnet.
    assert CniUnit.from_databag(out.get_relation(1).local_unit_data) == CniUnit(
        "10.1.0.0/16", "/etc/cni/net.d", "10.1.0.0/24"
    )
    # Peers learn the node name (from the principal) and the underlay (the network binding).
    assert own(out.get_relation(2).local_unit_data) == claim("node-0", "192.168.1.10")


def test_second_reconcile_writes_nothing_and_keeps_data_identical(
    ctx: testing.Context, sandbox: Path
) -> None:
    first = ctx.run(ctx.on.update_status(), state(principal(), _network(), leader=True))
    files = files_under(sandbox)
    assert CONFLIST in files
    again = ctx.run(ctx.on.update_status(), first)
    assert files_under(sandbox) == files
    for rel_id in (1, 2):
        assert own(again.get_relation(rel_id).local_unit_data) == own(
            first.get_relation(rel_id).local_unit_data
        )
    assert again.get_relation(2).local_app_data == first.get_relation(2).local_app_data


def test_vxlan_plan_has_a_device_and_an_entry_per_peer(
    ctx: testing.Context, sandbox: Path
) -> None:
    out = ctx.run(
        ctx.on.config_changed(),
        state(principal(), _network(), config={"backend": "vxlan", "vni": 7, "mtu": 9000}),
    )
    assert out.unit_status.message.startswith("vxlan: pod subnet 10.1.0.0/24, 2 peer(s)")
    plan = json.loads((sandbox / PLAN).read_text())
    assert plan["vxlan"] == {
        "vni": 7,
        "port": 4789,
        "local": "192.168.1.10",
        "mac": "0a:58:0a:01:00:00",
        "address": "10.1.0.0",
        "mtu": 8950,
    }
    assert plan["vxlan_peers"] == [
        {"vtep": "10.1.1.0", "mac": "0a:58:0a:01:01:00", "underlay": "192.168.1.11"},
        {"vtep": "10.1.2.0", "mac": "0a:58:0a:01:02:00", "underlay": "192.168.1.12"},
    ]
    assert plan["routes"][0] == {
        "dst": "10.1.1.0/24",
        "gateway": "10.1.1.0",
        "dev": "kaji.vxlan",
        "onlink": True,
    }
    assert json.loads((sandbox / CONFLIST).read_text())["plugins"][0]["mtu"] == 8950


def test_departed_peer_leaves_the_plan(ctx: testing.Context, sandbox: Path) -> None:
    network = peers({2: peer_bag("node-2", "192.168.1.12")}, app=app_bag(allocations=EXISTING))
    out = ctx.run(
        ctx.on.relation_departed(network, remote_unit=1, departing_unit=1),
        state(principal(), network),
    )
    assert out.unit_status.message.startswith("vxlan: pod subnet 10.1.0.0/24, 1 peer(s)")
    plan = json.loads((sandbox / PLAN).read_text())
    assert [r["dst"] for r in plan["routes"]] == ["10.1.2.0/24"]


def test_underlay_is_the_network_binding_address(ctx: testing.Context, sandbox: Path) -> None:
    out = ctx.run(ctx.on.update_status(), state(principal(), _network(), address="10.20.30.40"))
    assert own(out.get_relation(2).local_unit_data) == claim("node-0", "10.20.30.40")
    assert json.loads((sandbox / PLAN).read_text())["underlay"] == "10.20.30.40"


@pytest.mark.parametrize(
    ("bag", "status"),
    [
        ({}, testing.WaitingStatus("waiting for the node name from worker/0")),
        (
            {"node-name": '"Not_A_Name"', "service-cidr": '"10.152.183.0/24"'},
            testing.BlockedStatus(
                "worker/0 sent invalid cni data: node-name (not a DNS-1123 subdomain:"
                " 'Not_A_Name')"
            ),
        ),
    ],
)
def test_principal_data_is_awaited_and_checked(
    ctx: testing.Context, sandbox: Path, bag: dict[str, str], status: testing.StatusBase
) -> None:
    relation = testing.SubordinateRelation(
        "cni", remote_app_name="worker", remote_unit_data=bag, id=1
    )
    out = ctx.run(ctx.on.relation_changed(relation), state(relation, _network(), leader=True))
    assert out.unit_status == status
    assert files_under(sandbox) == {}


def test_without_a_principal_the_unit_waits(ctx: testing.Context) -> None:
    out = ctx.run(ctx.on.install(), state(_network()))
    assert out.unit_status == testing.WaitingStatus("waiting for the principal (cni relation)")


def test_remove_takes_the_files_away(ctx: testing.Context, sandbox: Path) -> None:
    out = ctx.run(ctx.on.update_status(), state(principal(), _network()))
    assert (sandbox / CONFLIST).exists()
    ctx.run(ctx.on.remove(), out)
    assert not (sandbox / CONFLIST).exists()
    assert not (sandbox / PLAN).exists()


def test_only_a_named_netns_or_a_real_machine_programs_the_kernel(sandbox: Path) -> None:
    from kaji.host import Host

    assert not dataplane.programs_kernel(Host(sandbox))
    assert dataplane.programs_kernel(Host(sandbox), netns="node-1")
    assert dataplane.programs_kernel(Host("/"))

"""Builders for the cni charm's unit tests: states, relations, databags (ops.testing only)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ops import testing

from charm import CniCharm
from kaji.interfaces import JUJU_KEYS
from kaji.interfaces.cni import CniPrincipalUnit
from kaji.interfaces.cni_network import CniNetworkApp, CniNetworkUnit

SERVICE_CIDR = "10.152.183.0/24"


def context(unit_id: int = 0) -> testing.Context:
    return testing.Context(CniCharm, app_name="cni", unit_id=unit_id)


def principal(node_name: str = "node-0") -> testing.SubordinateRelation:
    bag = CniPrincipalUnit(SERVICE_CIDR, node_name).to_databag()
    return testing.SubordinateRelation("cni", remote_app_name="worker", remote_unit_data=bag, id=1)


def juju_keys(address: str) -> dict[str, str]:
    """The keys Juju itself puts in a unit's databag, for a unit reached at `address`."""
    return {
        "egress-subnets": f"{address}/32",
        "ingress-address": address,
        "private-address": address,
    }


def claim(node_name: str, address: str) -> dict[str, str]:
    """What a cni unit writes in its peer databag."""
    return CniNetworkUnit(node_name, address).to_databag()


def peer_bag(node_name: str, address: str, *, ingress: str | None = None) -> dict[str, str]:
    """A peer's databag as Juju shows it: its claim plus Juju's keys (ingress: its address)."""
    return {**claim(node_name, address), **juju_keys(ingress or address)}


def app_bag(cidr: str = "10.1.0.0/16", allocations: Mapping[str, str] | None = None) -> dict:
    return CniNetworkApp(cidr, dict(allocations or {})).to_databag()


def peers(
    units: Mapping[int, Mapping[str, str]] | None = None,
    app: Mapping[str, str] | None = None,
    local: Mapping[str, str] | None = None,
) -> testing.PeerRelation:
    return testing.PeerRelation(
        "network",
        peers_data={k: dict(v) for k, v in (units or {}).items()},
        local_app_data=dict(app or {}),
        local_unit_data=dict(local or {}),
        id=2,
    )


def binding(address: str) -> testing.Network:
    return testing.Network(
        "network",
        bind_addresses=[testing.BindAddress([testing.Address(address)])],
        ingress_addresses=[address],
    )


def state(
    *relations: testing.RelationBase,
    leader: bool = False,
    address: str = "192.168.1.10",
    config: Mapping[str, str | int] | None = None,
) -> testing.State:
    return testing.State(
        relations=relations,
        leader=leader,
        networks=[binding(address)],
        config=dict(config or {}),
    )


def allocations(out: testing.State) -> dict[str, str]:
    bag = out.get_relation(2).local_app_data
    return json.loads(bag["allocations"]) if "allocations" in bag else {}


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with (inode, mtime_ns): a write replaces or touches it."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def own(bag: Mapping[str, str]) -> dict[str, str]:
    """A databag without the keys Juju (and ops.testing) put there."""
    return {k: v for k, v in bag.items() if k not in JUJU_KEYS}

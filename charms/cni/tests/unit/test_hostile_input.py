"""Hostile values in every databag key cni reads and in every option: never an uncaught error.

Relation data: the peers' unit bags (``node-name``, ``underlay-address`` and Juju's own
``ingress-address``), the peer application bag (``cluster-cidr``, ``allocations``) and the
principal's unit bag (``service-cidr``, ``node-name``). Whatever they hold, the hook finishes,
and no route or VXLAN entry ever points anywhere but at the address Juju reports for that peer.
Config: every option; an invalid value blocks naming the option and changes no file and no
relation data.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shutil
from pathlib import Path

from builders import app_bag, context, files_under, peer_bag, peers, principal, state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kaji_cni import literals
from kaji_cni.config import CniConfig

from kaji.config import ConfigError

HOSTILE = settings(
    max_examples=150,
    deadline=None,
    database=None,  # leave no .hypothesis directory behind
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PLAN = "var/lib/kaji/cni/dataplane.json"
PEERS = (1, 2, 3)
EXISTING = {f"cni/{n}": f"10.1.{n}.0/24" for n in (0, *PEERS)}

ADDRESSES = st.sampled_from(
    [
        "0.0.0.0", "255.255.255.255", "127.0.0.1", "::", "::1", "10.152.183.1", "10.1.0.1",
        "192.168.1.10", "192.168.1.11", "192.168.1.12", "fd00::11", "169.254.0.1",
        "224.0.0.1", " 192.168.1.11", "192.168.1.011", "192.168.1.11/32", "",
    ]
)  # fmt: skip
NETWORKS = st.sampled_from(
    [
        "10.1.0.0/16", "10.1.0.0/24", "10.1.0.0/32", "10.1.0.1/16", "0.0.0.0/0", "::/0",
        "fd00::/112", "fd00::/64", "10.152.183.0/24", "10.0.0.0/8", "10.1.255.0/24",
        "127.0.0.0/8", "10.1.0.0/33", "",
    ]
)  # fmt: skip
NAMES = st.sampled_from(["node-1", "Node_1", "-x", "a" * 300, "a." * 130, "", "node 1"])
UNITS = st.sampled_from(["cni/0", "cni/1", "cni/2", "cni/4", "cni", "worker/0", "cni/-1", ""])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _json(inner: st.SearchStrategy) -> st.SearchStrategy[str]:
    return inner.map(json.dumps)


#: A databag value: valid-looking JSON, JSON of the wrong type, not JSON at all, or huge.
def values(typed: st.SearchStrategy) -> st.SearchStrategy[str]:
    return st.one_of(
        _json(typed),
        _json(JSON_VALUES),
        st.text(max_size=40),
        st.just("x" * 70_000),
        st.just('"-----BEGIN EC PRIVATE KEY-----"'),
        st.just("NaN"),
        st.just("[" * 5000),
    )


ALLOCATIONS = st.dictionaries(UNITS, NETWORKS, max_size=4)


def _bag(fields: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[dict[str, str]]:
    """Some of the keys, each with a hostile value (or left as it was: None)."""
    return st.fixed_dictionaries({}, optional={k: v for k, v in fields.items()})


PEER_BAG = _bag(
    {
        "node-name": values(NAMES),
        "underlay-address": values(ADDRESSES),
        "ingress-address": ADDRESSES,
    }
)
APP_BAG = _bag({"cluster-cidr": values(NETWORKS), "allocations": values(ALLOCATIONS)})
PRINCIPAL_BAG = _bag({"service-cidr": values(NETWORKS), "node-name": values(NAMES)})


def _wipe(root: Path) -> None:
    shutil.rmtree(root)
    root.mkdir()


def _honest_addresses(units: dict[int, dict[str, str]]) -> dict[str, str]:
    """Unit name -> the address Juju reports for it, where that is an IP address."""
    found = {}
    for number, bag in units.items():
        try:
            found[f"cni/{number}"] = ipaddress.ip_address(
                bag.get("ingress-address", "")
            ).compressed
        except ValueError:
            continue
    return found


@HOSTILE
@given(
    peer_bags=st.fixed_dictionaries({n: PEER_BAG for n in PEERS}),
    app=APP_BAG,
    principal_bag=PRINCIPAL_BAG,
    leader=st.booleans(),
    backend=st.sampled_from(literals.BACKENDS),
)
def test_hostile_relation_data_never_fails_a_hook_nor_misroutes(
    sandbox: Path,
    peer_bags: dict[int, dict[str, str]],
    app: dict[str, str],
    principal_bag: dict[str, str],
    leader: bool,
    backend: str,
) -> None:
    _wipe(sandbox)
    units = {n: {**peer_bag(f"node-{n}", f"192.168.1.1{n}"), **peer_bags[n]} for n in PEERS}
    network = peers(units, app={**app_bag(allocations=EXISTING), **app})
    honest = principal()
    relation = dataclasses.replace(
        honest, remote_unit_data={**honest.remote_unit_data, **principal_bag}
    )
    ctx = context()
    before = state(relation, network, leader=leader, config={"backend": backend})
    out = ctx.run(ctx.on.update_status(), before)  # an uncaught exception fails the test here

    assert out.unit_status.name in ("active", "waiting", "blocked", "maintenance")
    if (sandbox / PLAN).exists():
        plan = json.loads((sandbox / PLAN).read_text())
        juju = _honest_addresses(units)
        via = {p["underlay"] for p in plan["vxlan_peers"]}
        if plan["backend"] == "host-gw":
            via = {r["gateway"] for r in plan["routes"]}
        assert via <= set(juju.values()), (via, juju)
        assert "fd00" not in "".join(plan["masquerade"])


OPTIONS = {
    "cidr": st.one_of(NETWORKS, st.text(max_size=30)),
    "node-prefix": st.integers(),
    "backend": st.one_of(st.sampled_from(["host-gw", "vxlan", "VXLAN", " vxlan", ""]), st.text()),
    "mtu": st.integers(),
    "vni": st.integers(),
    "vxlan-port": st.integers(),
}


@HOSTILE
@given(config=st.fixed_dictionaries({}, optional=OPTIONS).filter(bool))
def test_hostile_config_blocks_naming_the_option_and_changes_nothing(
    sandbox: Path, config: dict[str, object]
) -> None:
    _wipe(sandbox)
    ctx = context()
    network = peers({1: peer_bag("node-1", "192.168.1.11")}, app=app_bag(allocations=EXISTING))
    settled = ctx.run(ctx.on.config_changed(), state(principal(), network, leader=True))
    assert settled.unit_status.name == "active"
    files = files_under(sandbox)

    out = ctx.run(ctx.on.config_changed(), dataclasses.replace(settled, config=config))

    problem = _config_error(config)
    if problem is None:
        assert out.unit_status.name in ("active", "blocked", "waiting")
        return
    assert out.unit_status.name == "blocked"
    assert out.unit_status.message.startswith(f"invalid config {problem.option}: ")
    assert files_under(sandbox) == files
    for rel in out.relations:
        was = settled.get_relation(rel.id)
        assert (rel.local_app_data, rel.local_unit_data) == (
            was.local_app_data,
            was.local_unit_data,
        )


def _config_error(config: dict[str, object]) -> ConfigError | None:
    try:
        CniConfig.from_options(config)
    except ConfigError as exc:
        return exc
    return None

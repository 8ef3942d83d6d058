"""Hostile input: every databag key the charm reads and every option, fed garbage.

Whatever arrives, no hook raises; the leader never publishes data its own contract refuses;
invalid config blocks naming the option and leaves the machine, the relations and the ports as
they were. Examples per test: ``KAJI_FUZZ_EXAMPLES`` (default 40).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from builders import (
    CHARM_ROOT,
    CONTEXT_ROOT,
    Cluster,
    EtcdSide,
    base_state,
    databags,
    peer_bag,
    snapshot,
    with_relation,
    worker_bag,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kaji_control_plane.config import ControlPlaneConfig
from ops import testing

from charm import ControlPlaneCharm
from kaji import pki
from kaji.config import ConfigError
from kaji.interfaces import RelationDataError
from kaji.interfaces import control_plane_peers as peers
from kaji.interfaces import kube_control as kc

FUZZ = settings(
    max_examples=int(os.environ.get("KAJI_FUZZ_EXAMPLES", "40")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OPTIONS = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())["config"]["options"]


@dataclasses.dataclass(frozen=True)
class Template:
    """A settled unit: its state, its machine, and what it needs to run again."""

    state: testing.State
    machine: pathlib.Path
    unit_id: int
    hostname: str


@contextlib.contextmanager
def _machine(template: Template) -> Iterator[pathlib.Path]:
    """A fresh copy of the template's machine, as KAJI_HOST_ROOT for one example."""
    saved = {k: os.environ.get(k) for k in ("KAJI_HOST_ROOT", "KAJI_HOST_HOSTNAME")}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "machine"
        shutil.copytree(template.machine, root, symlinks=True)
        os.environ["KAJI_HOST_ROOT"] = str(root)
        os.environ["KAJI_HOST_HOSTNAME"] = template.hostname
        os.environ.pop("KAJI_HOST_PROCESSES", None)
        try:
            yield root
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _context(unit_id: int) -> testing.Context[ControlPlaneCharm]:
    return testing.Context(
        ControlPlaneCharm, charm_root=CONTEXT_ROOT, app_name="control-plane", unit_id=unit_id
    )


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    """A settled leader (one peer, one worker) and a settled non-leader beside it."""
    base = tmp_path_factory.mktemp("hostile")
    etcd = EtcdSide(pki.create_ca("etcd-ca"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAJI_HOST_ROOT", str(base / "cp0"))
        mp.setenv("KAJI_HOST_HOSTNAME", "cp-0")
        mp.delenv("KAJI_HOST_PROCESSES", raising=False)
        (base / "cp0").mkdir()
        bag1, _ = peer_bag(base / "cp1", "cp-1", ["10.0.0.2"])
        etcd_unit = testing.Relation(
            "etcd", remote_app_name="etcd", remote_units_data={0: {"x": '"y"'}}
        )
        kube = testing.Relation(
            "kube-control",
            remote_app_name="worker",
            remote_units_data={0: worker_bag("w0", ["10.0.1.5"])},
        )
        peer = testing.PeerRelation("cluster", peers_data={1: bag1})
        leader = Cluster(_context(0), etcd).converge(base_state(relations=[etcd_unit, kube, peer]))
        assert leader.unit_status.name == "active", leader.unit_status

        # control-plane/1, in the sandbox that made its keys, with what the leader published.
        mp.setenv("KAJI_HOST_ROOT", str(base / "cp1"))
        mp.setenv("KAJI_HOST_HOSTNAME", "cp-1")
        lpeer = leader.get_relations("cluster")[0]
        network = testing.Network(
            "cluster",
            bind_addresses=[testing.BindAddress([testing.Address("10.0.0.2")])],
            ingress_addresses=["10.0.0.2"],
        )
        state = testing.State(
            leader=False,
            relations={
                testing.PeerRelation(
                    "cluster",
                    id=lpeer.id,
                    local_app_data=dict(lpeer.local_app_data),
                    local_unit_data=dict(lpeer.peers_data[1]),
                    peers_data={0: dict(lpeer.local_unit_data)},
                ),
                dataclasses.replace(
                    leader.get_relations("etcd")[0], local_unit_data={}, remote_app_data={}
                ),
                *(r for r in leader.relations if r.endpoint in ("cni", "kube-control")),
            },
            secrets=leader.secrets,
            networks={network, dataclasses.replace(network, binding_name="kube-control")},
        )
        follower = Cluster(_context(1), etcd).converge(state)
        assert follower.unit_status.name == "active", follower.unit_status
    return {
        "leader": Template(leader, base / "cp0", 0, "cp-0"),
        "follower": Template(follower, base / "cp1", 1, "cp-1"),
    }


# ----------------------------------------------------------------------------- hostile values

_PEMS = st.sampled_from(
    [
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        pki.create_ca("hostile-ca").cert_pem,
        pki.create_csr(
            pki.generate_private_key(),
            pki.Identity.of("system:node:w9", ["system:nodes"], ["w9"], ["10.0.1.5"]),
        ),
    ]
)
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "A" * 70_000,
            "https://evil.example.com:2379",
            "http://10.0.0.1:2379",
            "10.1.0.1/16",
            "fd00::/112",
            "0.0.0.0",
            "255.255.255.255",
            "Registry.example.com",
            "cp-0",
            "kubernetes",
            "worker/0",
            "../../etc/passwd",
            "\x00",
        ]
    ),
    _PEMS,
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["worker/0", "control-plane/1"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=6,
)
#: A raw databag value: JSON of any shape, or not JSON at all.
VALUES = st.one_of(_JSON.map(json.dumps), _TEXT, st.just("[" * 3000))


def _edits(keys: list[str]) -> st.SearchStrategy[list[tuple[str, str | None]]]:
    key = st.sampled_from([*keys, "ingress-address", "private-address"]) | st.text(max_size=10)
    return st.lists(st.tuples(key, st.none() | VALUES), min_size=1, max_size=3)


def _apply(bag: dict[str, str], edits: list[tuple[str, str | None]]) -> dict[str, str]:
    bag = dict(bag)
    for key, value in edits:
        if not value:  # Juju has no empty values: setting "" removes the key
            bag.pop(key, None)
        else:
            bag[key] = value
    return bag


PEER_UNIT_KEYS = ["hostname", "addresses", "csrs", "public-address"]
PEER_APP_KEYS = ["ca-cert", "front-proxy-ca-cert", "certificates", "departed-nodes"]
WORKER_KEYS = ["node-name", "addresses", "kubelet-csr"]
ETCD_APP_KEYS = ["client-urls", "ca-cert", "certificates"]
CNI_KEYS = ["cluster-cidr", "cni-conf-path", "pod-subnet"]

#: (role, endpoint, which bag, the keys it holds)
TARGETS = [
    ("leader", "cluster", "peer-unit", PEER_UNIT_KEYS),
    ("leader", "cluster", "app", PEER_APP_KEYS),
    ("follower", "cluster", "app", PEER_APP_KEYS),
    ("follower", "cluster", "peer-unit", PEER_UNIT_KEYS),
    ("leader", "kube-control", "remote-unit", WORKER_KEYS),
    ("leader", "kube-control", "app", ["certificates", "ca-cert", "image-registry"]),
    ("leader", "etcd", "remote-app", ETCD_APP_KEYS),
    ("follower", "etcd", "remote-app", ETCD_APP_KEYS),
    ("leader", "etcd", "remote-unit", ["x", "client-csr"]),
    ("leader", "cni", "remote-unit", CNI_KEYS),
    ("follower", "cni", "remote-unit", CNI_KEYS),
]


def _mutate(state: testing.State, endpoint: str, bag: str, edits: list) -> testing.State:
    rel = state.get_relations(endpoint)[0]
    if bag == "app":
        new = dataclasses.replace(rel, local_app_data=_apply(dict(rel.local_app_data), edits))
    elif bag == "remote-app":
        new = dataclasses.replace(rel, remote_app_data=_apply(dict(rel.remote_app_data), edits))
    elif bag == "peer-unit":
        unit = next(iter(rel.peers_data))
        data = {**rel.peers_data, unit: _apply(dict(rel.peers_data[unit]), edits)}
        new = dataclasses.replace(rel, peers_data=data)
    elif isinstance(rel, testing.SubordinateRelation):
        new = dataclasses.replace(rel, remote_unit_data=_apply(dict(rel.remote_unit_data), edits))
    else:
        unit = next(iter(rel.remote_units_data))
        data = {**rel.remote_units_data, unit: _apply(dict(rel.remote_units_data[unit]), edits)}
        new = dataclasses.replace(rel, remote_units_data=data)
    return with_relation(state, new)


def _published_data_is_valid(before: testing.State, out: testing.State) -> None:
    """The leader publishes nothing its own contract would refuse.

    Only what the hook wrote counts: a bag it left as it was (a cheap update-status, or a
    reconcile that stopped early) still holds whatever the test put there.
    """
    readers = {
        ("cluster", "local-app"): peers.read_peer_app,
        ("cluster", "local-unit"): peers.read_peer_unit,
        ("kube-control", "local-app"): kc.read_provider_app,
        ("kube-control", "local-unit"): kc.read_provider_unit,
    }
    old = databags(before)
    for where, sides in databags(out).items():
        endpoint = where.split(":")[0]
        for side, bag in sides.items():
            reader = readers.get((endpoint, side))
            if reader is None or bag == old.get(where, {}).get(side):
                continue
            try:
                reader(bag)
            except RelationDataError as exc:  # pragma: no cover - the failure looked for
                pytest.fail(f"{where} {side}: published invalid data: {exc}")


@FUZZ
@given(
    target=st.sampled_from(TARGETS),
    edits=st.data(),
    event=st.sampled_from(["update-status", "relation-changed"]),
)
def test_hostile_relation_data_never_crashes_a_hook(
    templates: dict[str, Template], target: tuple, edits: st.DataObject, event: str
) -> None:
    role, endpoint, bag, keys = target
    template = templates[role]
    state = _mutate(template.state, endpoint, bag, edits.draw(_edits(keys)))
    ctx = _context(template.unit_id)
    with _machine(template):
        if event == "relation-changed":
            rel = state.get_relations(endpoint)[0]
            remote = None if isinstance(rel, testing.SubordinateRelation) else 0
            if isinstance(rel, testing.PeerRelation):
                remote = next(iter(rel.peers_data))
            out = ctx.run(ctx.on.relation_changed(rel, remote_unit=remote), state)
        else:
            out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status.name in {"active", "waiting", "blocked", "maintenance"}
    if role == "leader":
        _published_data_is_valid(state, out)


def _config_error(options: dict[str, Any]) -> ConfigError | None:
    """What the charm's own option check (and the pod network check) says of ``options``."""
    try:
        ControlPlaneConfig.from_options(options).check_pod_cidr("10.1.0.0/16")
    except ConfigError as exc:
        return exc
    return None


#: Values near the valid ones, per option: what an operator mistypes.
EDGES: dict[str, list[str]] = {
    "kubernetes-version": ["1.25.0", "1.33.99", "v1.32.3", "latest", "1.32"],
    "service-cidr": ["fd00::/112", "10.0.0.0/8", "10.1.0.0/24", "10.152.183.1/24", "fd00::/100"],
    "cluster-domain": ["Cluster.Local", "a..b", "x" * 300, "cluster.local."],
    "extra-sans": ["https://x.example", "203.0.113.5 a.example", "not_a_name", "a,b,,c"],
    "loadbalancer-address": ["https://lb.example.com", "lb.example.com:6443", "a b", "fd00::5"],
    "image-registry": ["Registry.example.com", "r.example/Up", "r.example:99999", "https://r"],
    "authorization-mode": ["Node", "Node,RBAC,AlwaysAllow", "Node,Node,RBAC", "RBAC,Node"],
    "audit-policy": ["kind: Policy", "{", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []"],
    "api-extra-args": ["v=1 v=2", "'", "insecure-port=8080", "Bad_Flag=1", "--v=3"],
    "controller-manager-extra-args": ["=x", "--node-monitor-grace-period=50s", "a b=c"],
    "scheduler-extra-args": ["v=4", "v", "--=1"],
    "release-mirror": ["ftp://x", "http://mirror.local/k8s/", "https://", "https://a b"],
    "kubernetes-sha256": ["abc", "a" * 64, "A" * 64, "g" * 64],
}


def _option_values(name: str) -> st.SearchStrategy[Any]:
    if OPTIONS[name]["type"] == "int":
        return st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([0, -1, 1])
    return st.sampled_from(EDGES.get(name, [""])) | _TEXT


@FUZZ
@given(st.data())
def test_hostile_options_block_naming_the_option_and_change_nothing(
    templates: dict[str, Template], data: st.DataObject
) -> None:
    role = data.draw(st.sampled_from(["leader", "follower"]))
    template = templates[role]
    names = data.draw(st.lists(st.sampled_from(sorted(OPTIONS)), min_size=1, max_size=2))
    options = {name: data.draw(_option_values(name)) for name in names}
    state = dataclasses.replace(template.state, config=options)
    ctx = _context(template.unit_id)
    with _machine(template) as root:
        before = snapshot(root)
        out = ctx.run(ctx.on.config_changed(), state)
        after = snapshot(root)
    defaults = {k: v["default"] for k, v in OPTIONS.items()}
    refusal = _config_error({**defaults, **options})
    if refusal is not None:
        assert out.unit_status == testing.BlockedStatus(f"{refusal.option}: {refusal.reason}")
        assert refusal.option in options
        assert after == before
        assert databags(out) == databags(template.state)
        assert out.opened_ports == template.state.opened_ports
        return
    assert out.unit_status.name in {"active", "waiting", "blocked", "maintenance"}
    if role == "leader":
        _published_data_is_valid(state, out)

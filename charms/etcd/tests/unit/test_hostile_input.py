"""Hostile relation data and config never crash a hook (issue 11, defect 11).

Hypothesis feeds hostile values (wrong JSON types, no JSON, huge values, bad URLs, foreign
certificates and CSRs, CSRs for another identity, private keys, deleted keys) into every
databag key the charm reads -- the peers' unit bags, the peer application bag, the clients'
unit bags, Juju's own address keys -- and into every config option, on a settled leader and a
settled follower (etcd only recorded). Every hook must end without an uncaught exception;
refused data is named by sender in the log and the status; the leader never publishes a
client URL off an address Juju reports; invalid config blocks naming the option and changes
nothing on the machine.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from builders import (
    ADDRESS,
    DEFAULT_CONFIG,
    app_bag,
    ca_secret,
    client_csr,
    machine_tree,
    own_csr,
    peer_relation,
    peer_units,
    relation_bags,
    unit_context,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kaji_etcd.config import EtcdConfig
from ops import testing

from charm import EtcdCharm
from kaji import pki
from kaji.config import ConfigError
from kaji.interfaces import RelationDataError, juju_addresses
from kaji.interfaces.etcd import read_requirer_unit
from kaji.interfaces.etcd_peers import read_peer_unit

HOSTILE = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis directory left behind
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # each example restores the machine itself
    ],
)

PEER_KEYS = [
    "member-name",
    "hostname",
    "addresses",
    "peer-url",
    "client-url",
    "peer-csr",
    "member-id",
    "ingress-address",
    "private-address",
    "unknown-key",
]
APP_KEYS = [
    "ca-cert",
    "cluster-token",
    "cluster-state",
    "members",
    "certificates",
    "member-ids",
    "recorded-only",
    "unknown-key",
]
DB_KEYS = ["client-csr", "ingress-address", "unknown-key"]
OWN_KEYS = ["member-id", "member-name", "unknown-key"]  # what the unit reads of its own bag

URLS = [
    "http://10.0.0.12:2379",
    "https://user:secret@10.0.0.12:2379",
    "https://10.0.0.12:2379?x=1",
    "https://10.0.0.12:2379#frag",
    "https://10.0.0.12:99999",
    "https://10.0.0.12:0",
    "https://evil.example.com:2379",
    "https://10.0.0.99:2379",
    "https://[::1]:2379",
    "https:///nohost",
    "file:///etc/passwd",
    "https://10.0.0.12:2379/ path",
    "",
]
WORDS = [
    "etcd-2",
    "etcd-1",
    "etcd/2",
    "Etcd_0",
    "machine-2",
    "evil.example.com",
    "10.0.0.12",
    "10.9.9.9",
    "0.0.0.0",
    "::1",
    "8e9e05c52164694d",
    "XYZ",
    "new",
    "existing",
    "kaji-etcd-test",
    "a b",
]


@functools.cache
def _pems() -> list[str]:
    """Foreign and misplaced PEM blocks: other identities' CSRs, a cert, a CA, a private key."""
    ca = pki.create_ca("hostile CA")
    other = peer_units(1)[0]
    return [
        other.data.peer_csr,  # a valid member CSR, for etcd/1
        client_csr("control-plane/0"),
        client_csr("etcd/2"),  # a client CSR naming a member
        other.certificate(ca),  # a certificate signed by another CA
        ca.cert_pem,
        ca.key_pem,  # a private key: must never be accepted anywhere
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ]


def _texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(URLS),
        st.sampled_from(WORDS),
        st.sampled_from(_pems()),
        st.text(max_size=40),
        st.just("A" * 70_000),  # over the per-value limit
        st.just("https://10.0.0.12:2379/" + "a" * 1_100_000),  # over the databag limit
    )


def _json_values() -> st.SearchStrategy[Any]:
    text = _texts()
    return st.one_of(
        text,
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.lists(text, max_size=3),
        st.dictionaries(
            st.sampled_from(["etcd/1", "etcd/2", "etcd-2", "x", "control-plane/0"]),
            text,
            max_size=3,
        ),
    )


def _raw_values() -> st.SearchStrategy[str | None]:
    """What a databag value may be: JSON of anything, not JSON at all, or gone (None)."""
    return st.one_of(
        _json_values().map(json.dumps),
        st.text(max_size=40),
        st.sampled_from([*URLS, *WORDS]),  # raw, as Juju writes its own keys
        st.just("[" * 5000),
        st.none(),
    )


# --- settled units, restored for every example ---------------------------------------------------


@dataclasses.dataclass
class Settled:
    ctx_for: Callable[[], testing.Context]
    state: testing.State
    template: Path
    root: Path
    tree: dict[str, Any]

    def __repr__(self) -> str:
        return f"Settled({self.root})"  # the state is too large to print in every failure

    def restore(self) -> None:
        shutil.rmtree(self.root)
        shutil.copytree(self.template, self.root, symlinks=True)


def _settle(ctx: testing.Context, state: testing.State) -> testing.State:
    for _ in range(4):
        with ctx(ctx.on.config_changed(), state) as manager:
            state = manager.run()
            if manager.charm.host.stats.files_written == 0:
                return state
    pytest.fail("the unit does not settle")


def _keep(
    sandbox: Path, tmp_path: Path, ctx_for: Callable[[], testing.Context], state: testing.State
) -> Settled:
    template = tmp_path / "template"
    shutil.copytree(sandbox, template, symlinks=True)
    return Settled(ctx_for, state, template, sandbox, machine_tree(sandbox))


@pytest.fixture
def leader(sandbox: Path, tmp_path: Path, ca: pki.CertificateAuthority) -> Settled:
    """etcd/0 leading etcd/1 and etcd/2, serving control-plane/0 and /1."""
    peers = peer_units(1, 2)
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    members.update({p.data.member_name: p.data.peer_url for p in peers})
    relation = peer_relation(
        peers, local_app_data=app_bag(ca, members, {p.name: p.certificate(ca) for p in peers})
    )
    db = testing.Relation(
        "db",
        remote_app_name="control-plane",
        remote_units_data={
            n: {
                "client-csr": json.dumps(client_csr(f"control-plane/{n}")),
                "ingress-address": f"10.1.0.{n}",
            }
            for n in (0, 1)
        },
    )
    ctx = functools.partial(testing.Context, EtcdCharm, app_name="etcd")
    state = _settle(
        ctx(), testing.State(leader=True, relations={relation, db}, secrets={ca_secret(ca)})
    )
    assert state.unit_status.name == "active"
    return _keep(sandbox, tmp_path, ctx, state)


@pytest.fixture
def follower(sandbox: Path, tmp_path: Path, ca: pki.CertificateAuthority) -> Settled:
    """etcd/1, a recorded member of three, its certificate signed by the leader."""
    ctx = unit_context(1)
    leader_unit, third = peer_units(0, 2)
    first = ctx.run(
        ctx.on.install(), testing.State(relations={peer_relation([leader_unit, third])})
    )
    members = {"etcd-0": leader_unit.data.peer_url, "etcd-1": f"https://{ADDRESS}:2380"}
    members["etcd-2"] = third.data.peer_url
    certificates = {"etcd/1": pki.sign_csr(own_csr(first), ca, pki.Profile.PEER)}
    relation = dataclasses.replace(
        first.get_relations("cluster")[0], local_app_data=app_bag(ca, members, certificates)
    )
    state = _settle(ctx, dataclasses.replace(first, relations={relation}))
    assert state.unit_status.name == "active"
    return _keep(sandbox, tmp_path, lambda: unit_context(1), state)


# --- relation data ----------------------------------------------------------------------------


def _edits(
    targets: list[tuple[str, int]],
) -> st.SearchStrategy[list[tuple[tuple[str, int], str, str | None]]]:
    keys = {"peer": PEER_KEYS, "app": APP_KEYS, "db": DB_KEYS, "own": OWN_KEYS}

    def one(target: tuple[str, int]) -> st.SearchStrategy[Any]:
        return st.tuples(st.just(target), st.sampled_from(keys[target[0]]), _raw_values())

    return st.lists(st.sampled_from(targets).flatmap(one), min_size=1, max_size=3)


def _apply(
    state: testing.State, edits: list[tuple[tuple[str, int], str, str | None]]
) -> testing.State:
    relations = {r.endpoint: r for r in state.relations}
    for (kind, n), key, value in edits:
        if kind == "peer":
            peer = relations["cluster"]
            bag = dict(peer.peers_data[n])
            _set(bag, key, value)
            relations["cluster"] = dataclasses.replace(
                peer, peers_data={**peer.peers_data, n: bag}
            )
        elif kind in ("app", "own"):
            peer = relations["cluster"]
            field = "local_app_data" if kind == "app" else "local_unit_data"
            bag = dict(getattr(peer, field))
            _set(bag, key, value)
            relations["cluster"] = dataclasses.replace(peer, **{field: bag})
        else:
            db = relations["db"]
            bag = dict(db.remote_units_data[n])
            _set(bag, key, value)
            relations["db"] = dataclasses.replace(
                db, remote_units_data={**db.remote_units_data, n: bag}
            )
    return dataclasses.replace(state, relations=set(relations.values()))


def _set(bag: dict[str, str], key: str, value: str | None) -> None:
    if value is None:
        bag.pop(key, None)
    else:
        bag[key] = value


def _run(
    settled: Settled, state: testing.State, event: str, edits: list[Any]
) -> tuple[testing.Context, testing.State]:
    ctx = settled.ctx_for()
    relations = {r.endpoint: r for r in state.relations}
    (kind, n), _, _ = edits[0]
    if event == "changed" and kind == "peer":
        hook = ctx.on.relation_changed(relations["cluster"], remote_unit=n)
    elif event == "changed" and kind == "db":
        hook = ctx.on.relation_changed(relations["db"], remote_unit=n)
    elif event == "changed":
        hook = ctx.on.relation_changed(relations["cluster"])
    elif event == "update":
        hook = ctx.on.update_status()
    else:
        hook = ctx.on.config_changed()
    return ctx, ctx.run(hook, state)  # an uncaught exception fails the example


def _refused(kind: str, bag: dict[str, str], unit: str) -> bool:
    """Whether the contract (as the charm applies it) refuses this bag."""
    try:
        if kind == "peer":
            read_peer_unit(bag, unit)
        else:
            read_requirer_unit(bag, unit)
    except RelationDataError:
        return True
    return False


def _published_hosts_are_juju_addresses(state: testing.State) -> None:
    peer = state.get_relations("cluster")[0]
    known = {ADDRESS}
    for bag in peer.peers_data.values():
        known |= juju_addresses(bag)
    provided = state.get_relations("db")[0].local_app_data.get("client-urls")
    for url in json.loads(provided) if provided else []:
        assert urlsplit(url).scheme == "https"
        assert (urlsplit(url).hostname or "").strip("[]") in known, url


@HOSTILE
@given(
    edits=_edits([("peer", 1), ("peer", 2), ("app", 0), ("own", 0), ("db", 0), ("db", 1)]),
    event=st.sampled_from(["changed", "config", "update"]),
)
def test_hostile_relation_data_on_the_leader(
    leader: Settled, edits: list[Any], event: str
) -> None:
    leader.restore()
    state = _apply(leader.state, edits)
    ctx, out = _run(leader, state, event, edits)
    assert out.unit_status.name in ("active", "waiting", "blocked", "maintenance")
    _published_hosts_are_juju_addresses(out)
    log = " ".join(line.message for line in ctx.juju_log)
    peer, db = state.get_relations("cluster")[0], state.get_relations("db")[0]
    touched = {target for target, _, _ in edits}
    for kind, n in touched:
        if kind == "peer" and _refused("peer", dict(peer.peers_data[n]), f"etcd/{n}"):
            assert f"refusing etcd/{n}'s peer data: " in log
            assert "refusing " in out.unit_status.message
        if kind == "db" and _refused("db", dict(db.remote_units_data[n]), f"control-plane/{n}"):
            assert f"refusing control-plane/{n}'s client certificate request: " in log
            assert "refusing " in out.unit_status.message
    if ("app", 0) not in touched:  # its own data intact: nobody else's certificate changes
        before = json.loads(
            leader.state.get_relations("cluster")[0].local_app_data["certificates"]
        )
        after = json.loads(out.get_relations("cluster")[0].local_app_data["certificates"])
        for unit, cert in before.items():
            if ("peer", int(unit.split("/")[1])) not in touched:
                assert after.get(unit) == cert, unit
        db_before = json.loads(leader.state.get_relations("db")[0].local_app_data["certificates"])
        db_after = json.loads(out.get_relations("db")[0].local_app_data["certificates"])
        for unit, cert in db_before.items():
            if ("db", int(unit.split("/")[1])) not in touched:
                assert db_after.get(unit) == cert, unit


@HOSTILE
@given(
    edits=_edits([("app", 0), ("own", 0), ("peer", 0), ("peer", 2)]),
    event=st.sampled_from(["changed", "config", "update"]),
)
def test_hostile_relation_data_on_a_follower(
    follower: Settled, edits: list[Any], event: str
) -> None:
    follower.restore()
    state = _apply(follower.state, edits)
    ctx, out = _run(follower, state, event, edits)
    assert out.unit_status.name in ("active", "waiting", "blocked", "maintenance")
    assert relation_bags(out)[state.get_relations("cluster")[0].id]["app"] == dict(
        state.get_relations("cluster")[0].local_app_data
    )  # a follower never writes application data
    if out.unit_status.name == "waiting" and "peer application data" in " ".join(
        line.message for line in ctx.juju_log
    ):
        assert "refusing the etcd leader's peer application data: " in out.unit_status.message


# --- config -------------------------------------------------------------------------------------

INT_OPTIONS = [
    "client-port",
    "peer-port",
    "heartbeat-interval",
    "election-timeout",
    "snapshot-count",
]
STR_OPTIONS = [
    "version",
    "release-mirror",
    "etcd-sha256",
    "quota-backend-bytes",
    "auto-compaction-mode",
    "auto-compaction-retention",
]


def _option_values() -> st.SearchStrategy[tuple[str, Any]]:
    ints = st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.sampled_from([0, -1, 1, 9, 10, 49, 50, 2379, 2380, 65535, 65536, 10**9, 10**9 + 1]),
    )
    strings = st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [
                "",
                " ",
                "3.5.17\n",
                "3.5",
                "../../../etc",
                "https://mirror.example.com/etcd",
                "http://mirror with space",
                "ftp://x",
                "2379",
                "-1",
                "1e9",
                "0",
                "101GiB",
                "2GiB",
                "periodic",
                "revision",
                "1h",
                "30x",
                "a" * 64,
                "0" * 64,
                "A" * 70_000,
            ]
        ),
    )
    return st.one_of(
        st.tuples(st.sampled_from(INT_OPTIONS), ints),
        st.tuples(st.sampled_from(STR_OPTIONS), strings),
    )


@HOSTILE
@given(changes=st.lists(_option_values(), min_size=1, max_size=3))
def test_hostile_config(leader: Settled, changes: list[tuple[str, Any]]) -> None:
    leader.restore()
    config = dict(changes)
    state = dataclasses.replace(leader.state, config=config)
    ctx = leader.ctx_for()
    out = ctx.run(ctx.on.config_changed(), state)
    try:
        EtcdConfig.from_options({**DEFAULT_CONFIG, **config})
        refused: ConfigError | None = None
    except ConfigError as error:
        refused = error
    if refused is None:
        assert out.unit_status.name in ("active", "waiting", "blocked", "maintenance")
        return
    assert out.unit_status == testing.BlockedStatus(
        f"invalid config: {refused.option}: {refused.reason}"
    )
    assert len(out.unit_status.message) < 200
    assert machine_tree(leader.root) == leader.tree  # nothing on the machine changed
    assert relation_bags(out) == relation_bags(leader.state)

"""Peer data reaches clients only through the validated peer contract (issue 11, defect 11).

With etcd only recorded (the offline model's sandbox), the leader publishes the client URLs of
the members from the peers' own data. A peer's URL must pass the contract and be on the
address Juju reports for that unit; otherwise the peer is refused, by name, in the status,
and its URL is never published.
"""

from __future__ import annotations

import json

import pytest
from builders import (
    ADDRESS,
    PeerUnit,
    app_bag,
    ca_secret,
    client_csr,
    peer_units,
)
from ops import testing

from kaji import pki
from kaji.interfaces.etcd import read_provider_app


def _leader_state(
    ca: pki.CertificateAuthority, bag_of_2: dict[str, str], honest: PeerUnit, liar: PeerUnit
) -> testing.State:
    members = {
        "etcd-0": f"https://{ADDRESS}:2380",
        "etcd-1": honest.data.peer_url,
        "etcd-2": "https://10.0.0.12:2380",  # a member since before its data turned bad
    }
    certificates = {honest.name: honest.certificate(ca), liar.name: liar.certificate(ca)}
    relation = testing.PeerRelation(
        "cluster",
        local_app_data=app_bag(ca, members, certificates),
        peers_data={1: honest.bag(), 2: bag_of_2},
    )
    db = testing.Relation(
        "db",
        remote_app_name="control-plane",
        remote_units_data={0: {"client-csr": json.dumps(client_csr("control-plane/0"))}},
    )
    return testing.State(leader=True, relations={relation, db}, secrets={ca_secret(ca)})


BAD_CLIENT_URLS = [
    ("http://10.0.0.12:2379", "scheme must be https"),
    ("https://user:secret@10.0.0.12:2379", "no credentials"),
    ("https://10.0.0.12:2379?token=1", "query"),
    ("https://10.0.0.12:99999", "not a URL"),
    ("", "scheme must be https"),
    ("https://10.0.0.12:2379/" + "a" * (1024 * 1024), "bytes, over"),
    ("https://10.0.0.99:2379", "host of https://10.0.0.99:2379 is not this unit's"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_CLIENT_URLS)
def test_bad_peer_client_url_is_refused_by_name_and_never_published(
    ctx: testing.Context, ca: pki.CertificateAuthority, url: str, reason: str
) -> None:
    honest, liar = peer_units(1, 2)
    bag = {**liar.bag(), "client-url": json.dumps(url)}
    state = ctx.run(ctx.on.config_changed(), _leader_state(ca, bag, honest, liar))
    provided = read_provider_app(state.get_relations("db")[0].local_app_data)
    assert provided is not None
    assert provided.client_urls == ("https://10.0.0.11:2379", f"https://{ADDRESS}:2379")
    assert state.unit_status.name == "active"
    assert "refusing etcd/2's peer data: client-url" in state.unit_status.message
    assert reason in state.unit_status.message or reason in " ".join(
        line.message for line in ctx.juju_log
    )


def test_peer_data_not_json_is_refused_by_name(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    honest, liar = peer_units(1, 2)
    bag = {**liar.bag(), "client-url": "https://10.0.0.12:2379"}  # not JSON-encoded
    state = ctx.run(ctx.on.config_changed(), _leader_state(ca, bag, honest, liar))
    assert "refusing etcd/2's peer data: client-url not valid JSON" in state.unit_status.message


def test_url_elsewhere_that_the_contract_allows_is_refused_for_its_juju_address(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    """The unit's own hostname is a valid URL host by contract; Juju vouches for none."""
    honest = peer_units(1)[0]
    liar = PeerUnit("etcd/2", "10.0.0.12", "evil.example.com")
    bag = {**liar.bag(), "client-url": json.dumps("https://evil.example.com:2379")}
    state = ctx.run(ctx.on.config_changed(), _leader_state(ca, bag, honest, liar))
    provided = read_provider_app(state.get_relations("db")[0].local_app_data)
    assert provided is not None
    assert all("evil" not in u for u in provided.client_urls)
    assert (
        "refusing etcd/2's peer data: client-url https://evil.example.com:2379 is not its "
        "address 10.0.0.12" in state.unit_status.message
    )


def test_peer_without_an_address_from_juju_is_refused(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    honest, liar = peer_units(1, 2)
    bag = {k: v for k, v in liar.bag().items() if k != "ingress-address"}
    state = ctx.run(ctx.on.config_changed(), _leader_state(ca, bag, honest, liar))
    assert (
        "refusing etcd/2's peer data: ingress-address Juju reports no address for the unit"
        in state.unit_status.message
    )


def test_many_refusals_are_summarised(ctx: testing.Context, ca: pki.CertificateAuthority) -> None:
    honest, liar = peer_units(1, 2)
    bag = {**liar.bag(), "client-url": json.dumps("http://10.0.0.12:2379")}
    state = _leader_state(ca, bag, honest, liar)
    db = state.get_relations("db")[0]
    asked = {n: {"client-csr": json.dumps(client_csr("control-plane/9"))} for n in (1, 2, 3)}
    db = testing.Relation(
        "db",
        remote_app_name="control-plane",
        remote_units_data={**db.remote_units_data, **asked},
    )
    others = {r for r in state.relations if r.endpoint != "db"}
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(leader=True, relations={*others, db}, secrets=state.secrets),
    )
    message = state.unit_status.message
    assert message.count("refusing ") == 2
    assert message.endswith("; and 2 more (see debug-log)")

"""The db relation: a client certificate per requiring unit, and the healthy members' URLs."""

from __future__ import annotations

from builders import (
    ADDRESS,
    FakeEtcd,
    app_bag,
    ca_secret,
    client_csr,
    decoded,
    peer_relation,
    peer_units,
)
from ops import testing

from kaji import pki
from kaji.interfaces.etcd import CLIENT_ORGANIZATION, read_provider_app


def _db(units: dict[int, str]) -> testing.Relation:
    return testing.Relation(
        "db",
        remote_app_name="control-plane",
        remote_units_data={n: {"client-csr": f'"{csr}"'.replace("\n", "\\n")} for n, csr in
                           units.items()},
    )  # fmt: skip


def _state(ca: pki.CertificateAuthority, db: testing.Relation, peers=(), **kw) -> testing.State:
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    members.update({p.data.member_name: p.data.peer_url for p in peers})
    peer = peer_relation(list(peers), local_app_data=app_bag(ca, members, {}))
    return testing.State(leader=True, relations={peer, db}, secrets={ca_secret(ca)}, **kw)


def _provided(state: testing.State):
    bag = state.get_relations("db")[0].local_app_data
    return read_provider_app(bag)


def test_each_requiring_unit_gets_its_own_client_certificate(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    key0, key1 = pki.generate_private_key(), pki.generate_private_key()
    db = _db({0: client_csr("control-plane/0", key0), 1: client_csr("control-plane/1", key1)})
    state = ctx.run(ctx.on.relation_changed(db, remote_unit=0), _state(ca, db))
    provided = _provided(state)
    assert provided is not None
    assert provided.ca_cert == ca.cert_pem
    assert provided.client_urls == (f"https://{ADDRESS}:2379",)
    for n, key in ((0, key0), (1, key1)):
        cert = provided.certificate_for(f"control-plane/{n}")
        assert cert is not None
        pki.verify_chain(cert, ca.cert_pem, pki.Profile.CLIENT)
        assert pki.cert_matches_key(cert, key)
        identity = pki.read_certificate(cert).identity
        assert identity.common_name == f"control-plane/{n}"
        assert identity.organizations == {CLIENT_ORGANIZATION}


def test_csr_naming_another_unit_is_refused(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    db = _db({0: client_csr("control-plane/0"), 1: client_csr("control-plane/0")})
    state = ctx.run(ctx.on.relation_changed(db, remote_unit=1), _state(ca, db))
    provided = _provided(state)
    assert provided is not None
    assert set(provided.certificates) == {"control-plane/0"}
    refusal = "refusing control-plane/1's client certificate request: client-csr"
    assert any(refusal in x.message for x in ctx.juju_log)
    assert refusal in state.unit_status.message


def test_departed_unit_loses_its_certificate(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    db = _db({0: client_csr("control-plane/0"), 1: client_csr("control-plane/1")})
    state = ctx.run(ctx.on.relation_changed(db, remote_unit=0), _state(ca, db))
    kept = _provided(state).certificate_for("control-plane/0")  # type: ignore[union-attr]
    smaller = testing.Relation(
        "db",
        id=db.id,
        remote_app_name="control-plane",
        remote_units_data={0: db.remote_units_data[0]},
        local_app_data=dict(state.get_relations("db")[0].local_app_data),
    )
    state = ctx.run(
        ctx.on.relation_departed(smaller, remote_unit=1, departing_unit=1), _state(ca, smaller)
    )
    provided = _provided(state)
    assert provided is not None
    assert set(provided.certificates) == {"control-plane/0"}
    assert provided.certificate_for("control-plane/0") == kept  # still good: not reissued


def test_urls_follow_the_members(ctx: testing.Context, ca: pki.CertificateAuthority) -> None:
    db = _db({0: client_csr("control-plane/0")})
    peers = peer_units(1, 2)
    state = ctx.run(ctx.on.relation_changed(db, remote_unit=0), _state(ca, db, peers))
    assert _provided(state).client_urls == (  # type: ignore[union-attr]
        "https://10.0.0.11:2379",
        "https://10.0.0.12:2379",
        f"https://{ADDRESS}:2379",
    )
    state = ctx.run(ctx.on.relation_changed(db, remote_unit=0), _state(ca, db, peers[:1]))
    assert _provided(state).client_urls == (  # type: ignore[union-attr]
        "https://10.0.0.11:2379",
        f"https://{ADDRESS}:2379",
    )


def test_only_healthy_members_are_published(
    ctx: testing.Context, ca: pki.CertificateAuthority, fake_etcd: FakeEtcd
) -> None:
    peers = peer_units(1, 2)
    fake_etcd.add("etcd-0", ADDRESS)
    for p in peers:
        fake_etcd.add(p.data.member_name, p.address)
    fake_etcd.unhealthy.add(fake_etcd.by_name("etcd-2").id)
    db = _db({0: client_csr("control-plane/0")})
    state = ctx.run(ctx.on.relation_changed(db, remote_unit=0), _state(ca, db, peers))
    assert _provided(state).client_urls == (  # type: ignore[union-attr]
        "https://10.0.0.11:2379",
        f"https://{ADDRESS}:2379",
    )
    assert state.unit_status == testing.ActiveStatus(
        "degraded: 2 of 3 members healthy (unhealthy: etcd-2), leader etcd/0"
    )


def test_non_leader_writes_nothing_to_clients(ca: pki.CertificateAuthority) -> None:
    from builders import unit_context

    ctx = unit_context(1)
    db = _db({0: client_csr("control-plane/0")})
    state = testing.State(relations={peer_relation(peer_units(0)), db})
    state = ctx.run(ctx.on.relation_changed(db, remote_unit=0), state)
    assert not decoded(dict(state.get_relations("db")[0].local_app_data))


def test_joined_unit_without_csr_yet_gets_urls_and_ca(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    db = testing.Relation("db", remote_app_name="control-plane", remote_units_data={0: {}})
    state = ctx.run(ctx.on.relation_joined(db, remote_unit=0), _state(ca, db))
    provided = _provided(state)
    assert provided is not None
    assert provided.certificates == {}
    assert provided.client_urls == (f"https://{ADDRESS}:2379",)

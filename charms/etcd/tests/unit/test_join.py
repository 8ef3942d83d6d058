"""Later units join: the leader signs them and adds them (as learners when etcd runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import (
    ADDRESS,
    FakeEtcd,
    app_bag,
    ca_secret,
    decoded,
    own_csr,
    peer_app,
    peer_relation,
    peer_units,
    unit_context,
)
from kaji_etcd import literals
from ops import testing

from kaji import pki


def test_leader_signs_and_records_every_peer(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    peers = peer_units(1, 2)
    state = ctx.run(
        ctx.on.relation_changed(rel := peer_relation(peers)),
        testing.State(leader=True, relations={rel}, secrets={ca_secret(ca)}),
    )
    app = decoded(peer_app(state))
    assert set(app["certificates"]) == {"etcd/0", "etcd/1", "etcd/2"}
    for peer in peers:
        cert = app["certificates"][peer.name]
        pki.verify_chain(cert, ca.cert_pem, pki.Profile.PEER)
        assert pki.cert_matches_csr(cert, peer.data.peer_csr)
    assert app["members"] == {
        "etcd-0": f"https://{ADDRESS}:2380",
        "etcd-1": "https://10.0.0.11:2380",
        "etcd-2": "https://10.0.0.12:2380",
    }
    assert state.unit_status == testing.ActiveStatus(
        "3 members (etcd not running on this machine: recorded only)"
    )


def _joining_unit_state(
    ca: pki.CertificateAuthority, members: dict[str, str], cert: str | None = None
) -> testing.State:
    leader = peer_units(0)[0]
    certificates = {leader.name: leader.certificate(ca)}
    if cert:
        certificates["etcd/1"] = cert
    relation = peer_relation([leader], local_app_data=app_bag(ca, members, certificates))
    return testing.State(relations={relation})


def test_unit_without_certificate_waits(ca: pki.CertificateAuthority) -> None:
    ctx = unit_context(1)
    state = ctx.run(
        ctx.on.install(), _joining_unit_state(ca, {"etcd-0": "https://10.0.0.10:2380"})
    )
    assert state.unit_status == testing.WaitingStatus(
        "waiting for a member certificate from the leader"
    )


def test_signed_unit_not_yet_added_waits(ca: pki.CertificateAuthority, sandbox: Path) -> None:
    ctx = unit_context(1)
    members = {"etcd-0": "https://10.0.0.10:2380"}
    state = ctx.run(ctx.on.install(), _joining_unit_state(ca, members))
    cert = pki.sign_csr(own_csr(state), ca, pki.Profile.PEER)
    state = ctx.run(ctx.on.config_changed(), _joining_unit_state(ca, members, cert))
    assert state.unit_status == testing.WaitingStatus(
        "waiting to be added to the cluster (1 member)"
    )
    assert not (sandbox / "etc/kaji/etcd/etcd.conf.yml").exists()
    assert (sandbox / "etc/kaji/etcd/pki/member.crt").read_text() == cert


def test_added_unit_starts_as_existing_member(ca: pki.CertificateAuthority, sandbox: Path) -> None:
    ctx = unit_context(1)
    members = {"etcd-0": "https://10.0.0.10:2380"}
    state = ctx.run(ctx.on.install(), _joining_unit_state(ca, members))
    cert = pki.sign_csr(own_csr(state), ca, pki.Profile.PEER)
    members["etcd-1"] = f"https://{ADDRESS}:2380"
    joined = _joining_unit_state(ca, members, cert)
    state = ctx.run(ctx.on.relation_changed(next(iter(joined.relations))), joined)
    config = json.loads((sandbox / "etc/kaji/etcd/etcd.conf.yml").read_text())
    assert config["initial-cluster-state"] == "existing"
    assert config["initial-cluster"] == (
        f"etcd-0=https://10.0.0.10:2380,etcd-1=https://{ADDRESS}:2380"
    )
    assert config["name"] == "etcd-1"
    assert state.unit_status == testing.ActiveStatus(
        "2 members (etcd not running on this machine: recorded only)"
    )


def test_unit_ignores_certificate_for_another_key(ca: pki.CertificateAuthority) -> None:
    ctx = unit_context(1)
    members = {"etcd-0": "https://10.0.0.10:2380", "etcd-1": f"https://{ADDRESS}:2380"}
    other = peer_units(1)[0]  # same unit name, another key
    state = ctx.run(ctx.on.install(), _joining_unit_state(ca, members, other.certificate(ca)))
    assert state.unit_status == testing.WaitingStatus(
        "waiting for a member certificate from the leader"
    )


# --- live etcd (FakeEtcd stands in for etcdctl) ------------------------------------------------


def _live_leader_state(ca: pki.CertificateAuthority, fake: FakeEtcd, numbers: tuple[int, ...]):
    fake.add("etcd-0", ADDRESS)
    peers = peer_units(*numbers)
    leader_cert = None
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    bag = app_bag(ca, members, {}, **{"member-ids": {"etcd-0": "1001"}})
    return (
        peers,
        leader_cert,
        testing.State(
            leader=True,
            relations={peer_relation(peers, local_app_data=bag)},
            secrets={ca_secret(ca)},
        ),
    )


def test_leader_adds_one_learner_at_a_time(
    ctx: testing.Context, ca: pki.CertificateAuthority, fake_etcd: FakeEtcd
) -> None:
    _peers, _, state = _live_leader_state(ca, fake_etcd, (1, 2))
    state = ctx.run(ctx.on.config_changed(), state)
    adds = [c for c in fake_etcd.calls if c[0] == "add"]
    assert adds == [("add", "etcd-1", "https://10.0.0.11:2380")]
    app = decoded(peer_app(state))
    assert set(app["members"]) == {"etcd-0", "etcd-1"}
    assert app["member-ids"]["etcd-1"] == fake_etcd.by_peer("https://10.0.0.11:2380").hex_id
    assert app["recorded-only"] is False

    # etcd-1 starts and promotes itself; the next hook adds etcd-2.
    fake_etcd.start("https://10.0.0.11:2380", "etcd-1", promote=True)
    state = ctx.run(ctx.on.relation_changed(state.get_relations("cluster")[0]), state)
    adds = [c for c in fake_etcd.calls if c[0] == "add"]
    assert adds[-1] == ("add", "etcd-2", "https://10.0.0.12:2380")
    assert set(decoded(peer_app(state))["members"]) == {"etcd-0", "etcd-1", "etcd-2"}


def test_leader_promotes_a_started_learner(
    ctx: testing.Context, ca: pki.CertificateAuthority, fake_etcd: FakeEtcd
) -> None:
    _, _, state = _live_leader_state(ca, fake_etcd, (1,))
    state = ctx.run(ctx.on.config_changed(), state)
    fake_etcd.start("https://10.0.0.11:2380", "etcd-1", promote=False)
    ctx.run(ctx.on.update_status(), state)
    assert not fake_etcd.by_peer("https://10.0.0.11:2380").is_learner


def test_joining_unit_promotes_itself_and_says_so(
    ca: pki.CertificateAuthority, fake_etcd: FakeEtcd, sandbox: Path
) -> None:
    ctx = unit_context(1)
    leader_id = fake_etcd.add("etcd-0", "10.0.0.10")
    members = {"etcd-0": "https://10.0.0.10:2380"}
    state = ctx.run(ctx.on.install(), _joining_unit_state(ca, members))
    cert = pki.sign_csr(own_csr(state), ca, pki.Profile.PEER)
    new_id = fake_etcd.add("etcd-1", ADDRESS, learner=True, started=False)
    members["etcd-1"] = f"https://{ADDRESS}:2380"
    state = ctx.run(ctx.on.config_changed(), _joining_unit_state(ca, members, cert))
    assert ("promote", f"{new_id:x}") in fake_etcd.calls
    unit_bag = state.get_relations("cluster")[0].local_unit_data
    assert json.loads(unit_bag["member-id"]) == f"{new_id:x}"
    assert state.unit_status == testing.ActiveStatus("healthy, 2 members, leader etcd/0")
    assert fake_etcd.leader == leader_id


def test_learner_that_cannot_catch_up_waits(
    ca: pki.CertificateAuthority, fake_etcd: FakeEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(literals, "PROMOTE_WAIT", 0)
    fake_etcd.promotable = False
    ctx = unit_context(1)
    fake_etcd.add("etcd-0", "10.0.0.10")
    members = {"etcd-0": "https://10.0.0.10:2380"}
    state = ctx.run(ctx.on.install(), _joining_unit_state(ca, members))
    cert = pki.sign_csr(own_csr(state), ca, pki.Profile.PEER)
    fake_etcd.add("etcd-1", ADDRESS, learner=True, started=False)
    members["etcd-1"] = f"https://{ADDRESS}:2380"
    state = ctx.run(ctx.on.config_changed(), _joining_unit_state(ca, members, cert))
    assert state.unit_status == testing.WaitingStatus("learner: catching up before promotion")
    assert "member-id" not in state.get_relations("cluster")[0].local_unit_data

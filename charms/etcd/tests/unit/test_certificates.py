"""The leader signs member CSRs only for the identity Juju vouches for, and renews when due."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from builders import (
    ADDRESS,
    PeerUnit,
    app_bag,
    ca_secret,
    decoded,
    own_csr,
    peer_app,
    peer_relation,
    peer_units,
    unit_context,
)
from ops import testing

from kaji import pki
from kaji.interfaces.etcd_peers import EtcdPeerUnit, expected_member_identity


def _run_leader(
    ctx: testing.Context, ca: pki.CertificateAuthority, relation: testing.PeerRelation
) -> testing.State:
    state = testing.State(leader=True, relations={relation}, secrets={ca_secret(ca)})
    return ctx.run(ctx.on.relation_changed(relation), state)


def test_csr_for_another_identity_is_refused(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    honest, impostor = peer_units(1, 2)
    # etcd/2's bag carries a CSR naming etcd/1.
    forged = EtcdPeerUnit(
        member_name="etcd-2",
        hostname=impostor.hostname,
        addresses=impostor.data.addresses,
        peer_url=impostor.data.peer_url,
        client_url=impostor.data.client_url,
        peer_csr=pki.create_csr(
            pki.generate_private_key(),
            expected_member_identity("etcd/1", impostor.hostname, impostor.data.addresses),
        ),
    )
    relation = testing.PeerRelation(
        "cluster",
        peers_data={1: honest.bag(), 2: {**forged.to_databag(), "ingress-address": "10.0.0.12"}},
    )
    state = _run_leader(ctx, ca, relation)
    certificates = decoded(peer_app(state))["certificates"]
    assert set(certificates) == {"etcd/0", "etcd/1"}
    assert "etcd-2" not in decoded(peer_app(state))["members"]
    assert any("refusing etcd/2's peer data: peer-csr" in line.message for line in ctx.juju_log)
    assert "; refusing etcd/2's peer data: peer-csr CSR for 'etcd/1'" in state.unit_status.message


def test_address_juju_does_not_report_is_refused(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    liar = PeerUnit("etcd/1", "10.9.9.9", "machine-1")
    relation = testing.PeerRelation(
        "cluster", peers_data={1: {**liar.data.to_databag(), "ingress-address": "10.0.0.11"}}
    )
    state = _run_leader(ctx, ca, relation)
    assert set(decoded(peer_app(state))["certificates"]) == {"etcd/0"}
    assert any("10.9.9.9" in line.message for line in ctx.juju_log)


def test_good_certificate_is_kept_and_due_one_renewed(
    ctx: testing.Context, ca: pki.CertificateAuthority
) -> None:
    fresh, old = peer_units(1, 2)
    fresh_cert = fresh.certificate(ca)
    past = datetime.now(timezone.utc) - timedelta(days=300)
    old_cert = pki.sign_csr(old.data.peer_csr, ca, pki.Profile.PEER, now=past)
    assert pki.renewal_due(old_cert)
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    bag = app_bag(ca, members, {"etcd/1": fresh_cert, "etcd/2": old_cert})
    state = _run_leader(ctx, ca, peer_relation([fresh, old], local_app_data=bag))
    certificates = decoded(peer_app(state))["certificates"]
    assert certificates["etcd/1"] == fresh_cert
    assert certificates["etcd/2"] != old_cert
    assert not pki.renewal_due(certificates["etcd/2"])
    assert pki.cert_matches_csr(certificates["etcd/2"], old.data.peer_csr)


def test_unit_installs_a_renewed_certificate_and_restarts(
    ca: pki.CertificateAuthority, sandbox: Path
) -> None:
    ctx = unit_context(1)
    leader = peer_units(0)[0]
    members = {"etcd-0": leader.data.peer_url, "etcd-1": f"https://{ADDRESS}:2380"}

    def state_with(cert: str | None) -> testing.State:
        certificates = {leader.name: leader.certificate(ca)}
        if cert:
            certificates["etcd/1"] = cert
        rel = peer_relation([leader], local_app_data=app_bag(ca, members, certificates))
        return testing.State(relations={rel})

    state = ctx.run(ctx.on.install(), state_with(None))
    csr = own_csr(state)
    ctx.run(ctx.on.config_changed(), state_with(pki.sign_csr(csr, ca, pki.Profile.PEER)))
    renewed = pki.sign_csr(csr, ca, pki.Profile.PEER)
    ctx.run(ctx.on.config_changed(), state_with(renewed))
    assert (sandbox / "etc/kaji/etcd/pki/member.crt").read_text() == renewed
    record = json.loads((sandbox / "var/lib/kaji/services/etcd.json").read_text())
    assert (record["starts"], record["restarts"]) == (1, 1)


@pytest.mark.parametrize(("validity_days", "note"), [(20, True), (365, False)])
def test_status_names_the_member_certificate_expiry_under_30_days(
    ca: pki.CertificateAuthority, validity_days: int, note: bool
) -> None:
    ctx = unit_context(1)
    leader = peer_units(0)[0]
    members = {"etcd-0": leader.data.peer_url, "etcd-1": f"https://{ADDRESS}:2380"}

    def state_with(cert: str | None) -> testing.State:
        certificates = {leader.name: leader.certificate(ca)}
        if cert:
            certificates["etcd/1"] = cert
        rel = peer_relation([leader], local_app_data=app_bag(ca, members, certificates))
        return testing.State(relations={rel})

    state = ctx.run(ctx.on.install(), state_with(None))
    cert = pki.sign_csr(own_csr(state), ca, pki.Profile.PEER, validity_days=validity_days)
    out = ctx.run(ctx.on.config_changed(), state_with(cert))
    assert out.unit_status.name == "active"
    # Signed 5 minutes in the past: 20 days of validity leave 19 whole days.
    expected = "member certificate expires in 19 days"
    assert (expected in out.unit_status.message) is note

"""The cluster PKI: CAs and shared keys in app-owned secrets, per-unit keys, leader signing."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import stat

import pytest
from builders import base_state, peer_bag
from kaji_control_plane import literals
from kaji_control_plane.pki import ca_from_content
from ops import testing

from kaji import pki
from kaji.interfaces import control_plane_peers as peers

LABELS = {
    literals.CA_SECRET,
    literals.FRONT_PROXY_CA_SECRET,
    literals.SERVICE_ACCOUNT_SECRET,
    literals.ENCRYPTION_SECRET,
}


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_leader_creates_each_app_secret_once(cluster) -> None:
    state = cluster.converge(base_state())
    assert {s.label for s in state.secrets} == LABELS
    assert all(s.owner == "app" for s in state.secrets)
    again = cluster.ctx.run(cluster.ctx.on.update_status(), state)
    assert {(s.label, s.id) for s in again.secrets} == {(s.label, s.id) for s in state.secrets}


def test_private_material_on_disk_is_0600(cluster, root: pathlib.Path) -> None:
    cluster.converge(base_state())
    pki_dir = root / "etc/kubernetes/pki"
    for name in ("sa.key", *(f"{p}.key" for p in peers.PURPOSES), "etcd/client.key"):
        assert _mode(pki_dir / name) == 0o600, name
    assert _mode(root / "etc/kubernetes/encryption-config.yaml") == 0o600
    for conf in ("admin", "controller-manager", "scheduler"):
        assert _mode(root / f"etc/kubernetes/{conf}.conf") == 0o600
    assert _mode(pki_dir / "ca.crt") == 0o644
    # CA keys never reach the disk.
    for path in pki_dir.rglob("*"):
        if path.is_file() and path.name != "sa.key" and path.suffix == ".key":
            assert not pki.read_certificate((path.with_suffix(".crt")).read_text()).is_ca


def test_apiserver_certificate_names_every_address_and_service_name(
    cluster, root: pathlib.Path
) -> None:
    options = {"extra-sans": "api.example 198.51.100.7", "loadbalancer-address": "203.0.113.9"}
    cluster.converge(base_state(config=options))
    cert = (root / "etc/kubernetes/pki/apiserver.crt").read_text()
    info = pki.read_certificate(cert)
    assert info.identity.common_name == "kube-apiserver"
    assert info.identity.dns_names == {
        "cp-0",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "api.example",
    }
    assert info.identity.ip_addresses == {
        "192.0.2.0",
        "10.152.183.1",
        "198.51.100.7",
        "203.0.113.9",
    }
    ca = (root / "etc/kubernetes/pki/ca.crt").read_text()
    pki.verify_chain(cert, ca, pki.Profile.SERVER)


def test_client_certificates_carry_their_identities(cluster, root: pathlib.Path) -> None:
    cluster.converge(base_state())
    pki_dir = root / "etc/kubernetes/pki"
    for purpose, (cn, orgs) in peers.CLIENT_IDENTITIES.items():
        cert = (pki_dir / f"{purpose}.crt").read_text()
        info = pki.read_certificate(cert)
        assert info.identity.common_name == cn
        assert info.identity.organizations == frozenset(orgs)
        ca_name = "front-proxy-ca.crt" if purpose == "front-proxy-client" else "ca.crt"
        pki.verify_chain(cert, (pki_dir / ca_name).read_text(), pki.Profile.CLIENT)


def test_shared_keys_come_from_the_secrets(cluster, root: pathlib.Path) -> None:
    state = cluster.converge(base_state())
    content = {s.label: s.tracked_content for s in state.secrets}
    assert (root / "etc/kubernetes/pki/sa.key").read_text() == content[
        literals.SERVICE_ACCOUNT_SECRET
    ]["key"]
    config = json.loads((root / "etc/kubernetes/encryption-config.yaml").read_text())
    provider = config["resources"][0]["providers"][0]["secretbox"]["keys"][0]
    assert provider["secret"] == content[literals.ENCRYPTION_SECRET]["key"]
    assert config["resources"][0]["resources"] == ["secrets"]


def test_non_leader_waits_for_the_ca(ctx, root: pathlib.Path) -> None:
    state = ctx.run(ctx.on.update_status(), base_state(leader=False))
    assert state.unit_status == testing.WaitingStatus(
        "waiting for the leader to create the cluster CA"
    )
    assert not state.secrets


def test_leader_change_regenerates_nothing(
    cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    first = cluster.converge(base_state())
    ca_before = dict(first.get_relations("cluster")[0].local_app_data)["ca-cert"]
    # Another machine becomes leader: fresh disk, same app secrets and peer app data.
    monkeypatch.setenv("KAJI_HOST_ROOT", str(tmp_path / "new-leader"))
    (tmp_path / "new-leader").mkdir()
    after = cluster.converge(dataclasses.replace(first, leader=True))
    after = cluster.ctx.run(cluster.ctx.on.leader_elected(), after)
    assert {
        (s.label, s.id, json.dumps(s.tracked_content, sort_keys=True)) for s in after.secrets
    } == {(s.label, s.id, json.dumps(s.tracked_content, sort_keys=True)) for s in first.secrets}
    assert dict(after.get_relations("cluster")[0].local_app_data)["ca-cert"] == ca_before
    assert (tmp_path / "new-leader/etc/kubernetes/pki/ca.crt").read_text() == json.loads(ca_before)


def test_leader_refuses_a_peer_csr_for_another_identity(cluster, tmp_path: pathlib.Path) -> None:
    bag, _ = peer_bag(tmp_path / "cp1", "cp-1", ["10.0.0.2"])
    # cp-1's apiserver CSR claims an extra SAN the leader does not expect: refused and logged.
    key = pki.generate_private_key()
    wrong = peers.expected_apiserver_identity(
        "cp-1", ["10.0.0.2"], "10.152.183.1", "cluster.local", ["evil.example"]
    )
    csrs = json.loads(bag["csrs"])
    csrs["apiserver"] = pki.create_csr(key, wrong)
    bag["csrs"] = json.dumps(csrs, sort_keys=True, separators=(",", ":"))
    peer = testing.PeerRelation("cluster", peers_data={1: bag})
    state = cluster.converge(base_state(relations=[peer]))
    app = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert app is not None
    assert set(app.certificates_for("control-plane/1")) == set(peers.CLIENT_IDENTITIES)
    assert "apiserver" not in app.certificates_for("control-plane/1")
    assert set(app.certificates_for("control-plane/0")) == set(peers.PURPOSES)


def test_certificate_is_renewed_when_due(cluster, root: pathlib.Path) -> None:
    from datetime import datetime, timedelta, timezone

    state = cluster.converge(base_state())
    app = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert app is not None
    ca = ca_from_content(
        next(s for s in state.secrets if s.label == literals.CA_SECRET).tracked_content
    )
    csr = (root / "etc/kubernetes/pki/scheduler.csr").read_text()
    old = pki.sign_csr(
        csr,
        ca,
        pki.Profile.CLIENT,
        validity_days=365,
        now=datetime.now(timezone.utc) - timedelta(days=300),
    )
    assert pki.renewal_due(old)
    certs = {u: dict(c) for u, c in app.certificates.items()}
    certs["control-plane/0"]["scheduler"] = old
    relation = state.get_relations("cluster")[0]
    stale = peers.ControlPlanePeerApp(app.ca_cert, app.front_proxy_ca_cert, certs).to_databag()
    state = dataclasses.replace(
        state,
        relations={
            *(r for r in state.relations if r.endpoint != "cluster"),
            dataclasses.replace(relation, local_app_data=stale),
        },
    )
    state = cluster.ctx.run(cluster.ctx.on.update_status(), state)
    renewed = peers.read_peer_app(state.get_relations("cluster")[0].local_app_data)
    assert renewed is not None
    new = renewed.certificates_for("control-plane/0")["scheduler"]
    assert new != old
    assert not pki.renewal_due(new)
    # Other certificates were kept as they were.
    assert (
        renewed.certificates_for("control-plane/0")["admin"] == certs["control-plane/0"]["admin"]
    )

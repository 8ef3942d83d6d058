"""Unit-side keys and CSRs are stable across hooks; the leader reissues only when it must."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kaji import certs, pki
from kaji.host import Host

IDENTITY = pki.Identity.of("etcd/0", ["kaji:etcd-members"], ["etcd-0", "localhost"], ["10.0.0.1"])


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.create_ca("test-ca")


def test_key_is_private_and_kept_csr_reused_while_identity_holds(host: Host) -> None:
    first = certs.ensure_key_and_csr(host, "/var/lib/kaji/pki", "member", IDENTITY)
    key_file = host.path(first.key_path)
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    written = host.stats.files_written
    again = certs.ensure_key_and_csr(host, "/var/lib/kaji/pki", "member", IDENTITY)
    assert again == first
    assert host.stats.files_written == written  # nothing rewritten on a second run
    other = pki.Identity.of("etcd/0", ["kaji:etcd-members"], ["etcd-0"], ["10.0.0.2"])
    changed = certs.ensure_key_and_csr(host, "/var/lib/kaji/pki", "member", other)
    assert changed.key_pem == first.key_pem
    assert changed.csr_pem != first.csr_pem
    assert pki.read_csr(changed.csr_pem) == other


def test_a_corrupt_key_is_replaced(host: Host) -> None:
    host.write_file("/pki/x.key", "garbage", mode=0o600)
    made = certs.ensure_key_and_csr(host, "/pki", "x", IDENTITY)
    assert pki.csr_matches_key(made.csr_pem, made.key_pem)


def test_issue_keeps_a_valid_cert_and_reissues_when_needed(
    host: Host, ca: pki.CertificateAuthority
) -> None:
    request = certs.ensure_key_and_csr(host, "/pki", "member", IDENTITY)
    cert = certs.issue(request.csr_pem, IDENTITY, ca, pki.Profile.PEER)
    assert certs.usable_certificate(cert, request, ca.cert_pem, pki.Profile.PEER)
    assert certs.issue(request.csr_pem, IDENTITY, ca, pki.Profile.PEER, cert) == cert
    # Renewal due: under a third of the lifetime left.
    later = datetime.now(timezone.utc) + timedelta(days=300)
    renewed = certs.issue(request.csr_pem, IDENTITY, ca, pki.Profile.PEER, cert, now=later)
    assert renewed != cert
    # Another CA (e.g. a restored one) issued it: reissue.
    other_ca = pki.create_ca("other")
    foreign = pki.sign_csr(request.csr_pem, other_ca, pki.Profile.PEER)
    assert certs.issue(request.csr_pem, IDENTITY, ca, pki.Profile.PEER, foreign) != foreign
    assert not certs.usable_certificate(foreign, request, ca.cert_pem, pki.Profile.PEER)
    # A new key on the unit: the old cert no longer answers the CSR.
    host.remove_file("/pki/member.key")
    fresh = certs.ensure_key_and_csr(host, "/pki", "member", IDENTITY)
    assert certs.issue(fresh.csr_pem, IDENTITY, ca, pki.Profile.PEER, cert) != cert
    assert not certs.usable_certificate(cert, fresh, ca.cert_pem, pki.Profile.PEER)


def test_issue_refuses_a_csr_for_another_identity(
    host: Host, ca: pki.CertificateAuthority
) -> None:
    request = certs.ensure_key_and_csr(host, "/pki", "member", IDENTITY)
    impostor = pki.Identity.of(
        "etcd/1", ["kaji:etcd-members"], ["etcd-0", "localhost"], ["10.0.0.1"]
    )
    with pytest.raises(pki.IdentityMismatch, match="etcd/1"):
        certs.issue(request.csr_pem, impostor, ca, pki.Profile.PEER)


def test_usable_certificate_refuses_wrong_profile(
    host: Host, ca: pki.CertificateAuthority
) -> None:
    request = certs.ensure_key_and_csr(host, "/pki", "member", IDENTITY)
    client_only = pki.sign_csr(request.csr_pem, ca, pki.Profile.CLIENT)
    assert not certs.usable_certificate(client_only, request, ca.cert_pem, pki.Profile.SERVER)
    assert not certs.usable_certificate(None, request, ca.cert_pem, pki.Profile.SERVER)

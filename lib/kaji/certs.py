"""Certificates as charms handle them: unit-side keys and CSRs, leader-side issuing.

A unit's private key is made on the unit, stored 0600, and never leaves it; its CSR is kept
beside it and reused for as long as the identity it asks for is unchanged, so relation data
stays byte-identical across hooks (ECDSA signatures are randomised: a CSR made afresh in every
hook would change the databag every time). The leader reissues a certificate only when there
is none, it does not answer the current CSR, it was not signed by the current CA, or its
renewal is due.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING

from kaji import pki

if TYPE_CHECKING:
    from kaji.host import Host


@dataclasses.dataclass(frozen=True)
class KeyAndRequest:
    """A unit's private key and the CSR that asks for a certificate for it."""

    key_pem: str
    csr_pem: str
    key_path: str
    cert_path: str


def ensure_key_and_csr(
    host: Host,
    directory: str,
    name: str,
    identity: pki.Identity,
    *,
    owner: str | None = None,
    group: str | None = None,
) -> KeyAndRequest:
    """Return the key and CSR for ``name`` under ``directory``, making them only when needed.

    The key (``name.key``, 0600) is made once and kept; the CSR (``name.csr``) is remade only
    when the identity changes or it does not match the key.
    """
    key_path, csr_path = f"{directory}/{name}.key", f"{directory}/{name}.csr"
    host.ensure_directory(directory, mode=0o750)
    key = host.read_text(key_path)
    try:
        usable_key = key is not None and bool(pki.public_key_pem(key))
    except pki.PKIError:
        usable_key = False
    if not usable_key:
        key = pki.generate_private_key()
    assert key is not None
    host.write_file(key_path, key, mode=0o600, owner=owner, group=group)
    csr = host.read_text(csr_path)
    try:
        reusable = (
            csr is not None and pki.read_csr(csr) == identity and pki.csr_matches_key(csr, key)
        )
    except pki.PKIError:
        reusable = False
    if not reusable:
        csr = pki.create_csr(key, identity)
        host.write_file(csr_path, csr, mode=0o644)
    assert csr is not None
    return KeyAndRequest(key, csr, key_path, f"{directory}/{name}.crt")


def usable_certificate(
    cert_pem: str | None,
    request: KeyAndRequest,
    ca_cert_pem: str,
    profile: pki.Profile,
    now: datetime | None = None,
) -> bool:
    """Whether a certificate received from the leader can be installed for this request."""
    if not cert_pem:
        return False
    try:
        pki.verify_chain(cert_pem, ca_cert_pem, profile, now=now)
        return pki.cert_matches_csr(cert_pem, request.csr_pem) and pki.cert_matches_key(
            cert_pem, request.key_pem
        )
    except pki.PKIError:
        return False


def issue(
    csr_pem: str,
    expected: pki.Identity,
    ca: pki.CertificateAuthority,
    profile: pki.Profile,
    existing_cert_pem: str | None = None,
    *,
    validity_days: int = 365,
    now: datetime | None = None,
) -> str:
    """Leader side: check the CSR's identity, then keep the existing cert or sign a new one.

    Raises:
        pki.IdentityMismatch: the CSR asks for another identity than ``expected``.
        pki.PKIError: the CSR is unreadable.
    """
    pki.check_csr(csr_pem, expected)
    if existing_cert_pem and not reissue_needed(existing_cert_pem, csr_pem, ca, profile, now):
        return existing_cert_pem
    return pki.sign_csr(csr_pem, ca, profile, validity_days=validity_days, now=now)


def reissue_needed(
    cert_pem: str,
    csr_pem: str,
    ca: pki.CertificateAuthority,
    profile: pki.Profile,
    now: datetime | None = None,
) -> bool:
    """Whether an issued certificate no longer serves: other key/identity, CA, or renewal due."""
    try:
        pki.verify_chain(cert_pem, ca.cert_pem, profile, now=now)
        return not pki.cert_matches_csr(cert_pem, csr_pem) or pki.renewal_due(cert_pem, now)
    except pki.PKIError:
        return True

"""Tests for kaji.pki, checked against real verifiers: the openssl CLI and Python's ssl (TLS)."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from kaji import pki
from kaji.pki import (
    CertificateAuthority,
    Identity,
    IdentityMismatch,
    PKIError,
    Profile,
)

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
FUZZ = settings(max_examples=150, deadline=None, database=None)

SERVER_ID = Identity.of("kube-apiserver", (), ["localhost", "api.cluster.lan"], ["127.0.0.1"])
CLIENT_ID = Identity.of("system:node:w1", ["system:nodes"])
NODE_ID = Identity.of(
    "system:node:w1", ["system:nodes"], ["w1", "w1.lan"], ["10.0.0.1", "fd00::1"]
)

R = TypeVar("R")


# --- shared material (ECDSA keys are cheap, but reuse what is reused) ----------------------------


@cache
def ca() -> CertificateAuthority:
    return pki.create_ca("kaji-test-ca")


@cache
def other_ca() -> CertificateAuthority:
    return pki.create_ca("kaji-other-ca")


@dataclass(frozen=True)
class Leaf:
    key_pem: str
    csr_pem: str
    cert_pem: str


def issue(
    identity: Identity,
    profile: Profile,
    authority: CertificateAuthority | None = None,
    validity_days: int = 365,
    now: datetime | None = None,
) -> Leaf:
    key = pki.generate_private_key()
    csr = pki.create_csr(key, identity)
    cert = pki.sign_csr(csr, authority or ca(), profile, validity_days=validity_days, now=now)
    return Leaf(key, csr, cert)


@cache
def node_csr() -> str:
    return pki.create_csr(pki.generate_private_key(), NODE_ID)


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(obj: x509.Certificate | x509.CertificateSigningRequest) -> str:
    return obj.public_bytes(serialization.Encoding.PEM).decode()


def raw_csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    subject: list[x509.NameAttribute],
    alt_names: list[x509.GeneralName] | None = None,
    algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
) -> str:
    """A CSR built directly with cryptography, to feed read_csr what create_csr never makes."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return pem(builder.sign(key, None))
    return pem(builder.sign(key, algorithm or hashes.SHA256()))


def cert_of(cert_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_pem.encode())


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kaji-pki-") as name:
        yield Path(name)


# --- openssl CLI -------------------------------------------------------------------------------


OpenSSL = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def openssl() -> OpenSSL:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl binary is not installed")

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
        )

    return run


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("profile", list(Profile))
def test_openssl_verifies_each_profile_strictly(
    openssl: OpenSSL, workdir: Path, profile: Profile
) -> None:
    leaf = issue(NODE_ID, profile)
    ca_file = write(workdir, "ca.pem", ca().cert_pem)
    leaf_file = write(workdir, "leaf.pem", leaf.cert_pem)

    result = openssl("verify", "-x509_strict", "-CAfile", ca_file, leaf_file)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{leaf_file}: OK"


def test_openssl_verifies_the_ca_itself_strictly(openssl: OpenSSL, workdir: Path) -> None:
    ca_file = write(workdir, "ca.pem", ca().cert_pem)
    result = openssl("verify", "-x509_strict", "-CAfile", ca_file, ca_file)
    assert result.returncode == 0, result.stderr


def test_openssl_rejects_a_leaf_from_another_ca(openssl: OpenSSL, workdir: Path) -> None:
    leaf = issue(NODE_ID, Profile.PEER, authority=other_ca())
    ca_file = write(workdir, "ca.pem", ca().cert_pem)
    leaf_file = write(workdir, "leaf.pem", leaf.cert_pem)

    result = openssl("verify", "-CAfile", ca_file, leaf_file)

    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("profile", "sslserver", "sslclient"),
    [
        (Profile.SERVER, True, False),
        (Profile.CLIENT, False, True),
        (Profile.PEER, True, True),
    ],
)
def test_openssl_purpose_follows_the_profile(
    openssl: OpenSSL, workdir: Path, profile: Profile, sslserver: bool, sslclient: bool
) -> None:
    leaf = issue(NODE_ID, profile)
    ca_file = write(workdir, "ca.pem", ca().cert_pem)
    leaf_file = write(workdir, "leaf.pem", leaf.cert_pem)

    for purpose, allowed in (("sslserver", sslserver), ("sslclient", sslclient)):
        result = openssl("verify", "-purpose", purpose, "-CAfile", ca_file, leaf_file)
        assert (result.returncode == 0) is allowed, (purpose, result.stdout, result.stderr)
        if not allowed:
            assert "certificate purpose" in result.stdout + result.stderr


def test_openssl_text_shows_subject_and_alt_names(openssl: OpenSSL, workdir: Path) -> None:
    leaf = issue(NODE_ID, Profile.PEER)
    result = openssl("x509", "-noout", "-text", "-in", write(workdir, "leaf.pem", leaf.cert_pem))

    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Subject: O = system:nodes, CN = system:node:w1" in text
    assert "Issuer: CN = kaji-test-ca" in text
    for name in ("DNS:w1", "DNS:w1.lan", "IP Address:10.0.0.1", "IP Address:FD00:0:0:0:0:0:0:1"):
        assert name in text.replace("fd00", "FD00")
    assert "ecdsa-with-SHA256" in text
    assert "CA:FALSE" in text


def test_openssl_accepts_our_csr_and_we_read_openssls(openssl: OpenSSL, workdir: Path) -> None:
    csr_file = write(workdir, "ours.csr", node_csr())
    assert openssl("req", "-verify", "-noout", "-in", csr_file).returncode == 0

    key_file = write(workdir, "key.pem", pki.generate_private_key())
    theirs = workdir / "theirs.csr"
    made = openssl(
        "req", "-new", "-key", key_file, "-out", theirs,
        "-subj", "/O=system:nodes/CN=system:node:w1",
        "-addext", "subjectAltName=DNS:w1,DNS:w1.lan,IP:10.0.0.1,IP:fd00:0::1",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    assert pki.check_csr(theirs.read_text(), NODE_ID) == NODE_ID


# --- real TLS handshakes -----------------------------------------------------------------------


@dataclass
class Exchange:
    server_received: bytes | None = None
    server_saw_client: str | None = None
    server_error: BaseException | None = None
    client_reply: bytes | None = None
    client_error: BaseException | None = None


def tls_exchange(
    directory: Path, server: Leaf, client: Leaf, client_trusts: str | None = None
) -> Exchange:
    """Connect a TLS client to a TLS server on 127.0.0.1, both requiring the other's cert."""
    trust = ca().cert_pem
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(
        write(directory, "server.pem", server.cert_pem),
        write(directory, "server.key", server.key_pem),
    )
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=trust)

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its IP SAN
    client_ctx.load_cert_chain(
        write(directory, "client.pem", client.cert_pem),
        write(directory, "client.key", client.key_pem),
    )
    client_ctx.load_verify_locations(cadata=client_trusts or trust)

    result = Exchange()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
                    result.server_saw_client = pki.read_certificate(pem(peer)).identity.common_name
                    result.server_received = tls.recv(64)
                    tls.sendall(b"pong:" + result.server_received)
        except (OSError, PKIError) as error:  # ssl.SSLError is an OSError
            result.server_error = error

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"ping")
            result.client_reply = tls.recv(64)
    except OSError as error:
        result.client_error = error
    finally:
        thread.join(timeout=10)
        listener.close()
    assert not thread.is_alive(), "TLS server thread did not finish"
    return result


def test_tls_server_and_client_profiles_from_one_ca_talk(workdir: Path) -> None:
    result = tls_exchange(
        workdir, issue(SERVER_ID, Profile.SERVER), issue(CLIENT_ID, Profile.CLIENT)
    )
    assert result.server_error is None
    assert result.client_error is None
    assert result.server_received == b"ping"
    assert result.client_reply == b"pong:ping"
    assert result.server_saw_client == "system:node:w1"


def test_tls_peer_profile_serves_both_roles(workdir: Path) -> None:
    peer_id = Identity.of("etcd-0", (), ["localhost"], ["127.0.0.1"])
    result = tls_exchange(workdir, issue(peer_id, Profile.PEER), issue(peer_id, Profile.PEER))
    assert result.client_reply == b"pong:ping"
    assert result.server_error is None


def test_tls_server_refuses_a_client_cert_from_another_ca(workdir: Path) -> None:
    result = tls_exchange(
        workdir,
        issue(SERVER_ID, Profile.SERVER),
        issue(CLIENT_ID, Profile.CLIENT, authority=other_ca()),
    )
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate verify failed" in str(result.server_error)
    assert result.server_received is None
    assert result.client_reply in (None, b"")


def test_tls_server_refuses_a_client_cert_with_the_server_profile(workdir: Path) -> None:
    result = tls_exchange(
        workdir, issue(SERVER_ID, Profile.SERVER), issue(CLIENT_ID, Profile.SERVER)
    )
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate purpose" in str(result.server_error)
    assert result.server_received is None
    assert result.client_reply in (None, b"")


def test_tls_client_refuses_a_server_cert_with_the_client_profile(workdir: Path) -> None:
    result = tls_exchange(
        workdir, issue(SERVER_ID, Profile.CLIENT), issue(CLIENT_ID, Profile.CLIENT)
    )
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert "certificate purpose" in str(result.client_error)
    assert result.server_received is None


def test_tls_client_refuses_a_server_cert_without_its_address(workdir: Path) -> None:
    elsewhere = Identity.of("kube-apiserver", (), ["localhost"], ["10.9.9.9"])
    result = tls_exchange(
        workdir, issue(elsewhere, Profile.SERVER), issue(CLIENT_ID, Profile.CLIENT)
    )
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert "IP address mismatch" in str(result.client_error)


# --- keys, CA and leaf contents ----------------------------------------------------------------


def test_private_key_is_p256_pkcs8_and_public_key_matches() -> None:
    key_pem = pki.generate_private_key()
    assert key_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)

    leaf = issue(CLIENT_ID, Profile.CLIENT)
    expected = (
        cert_of(leaf.cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert pki.public_key_pem(leaf.key_pem) == expected.decode()
    assert pki.public_key_pem(leaf.key_pem) != pki.public_key_pem(key_pem)


def test_ca_certificate_extensions() -> None:
    authority = pki.create_ca("cluster-ca", validity_days=100, now=T0)
    cert = cert_of(authority.cert_pem)

    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_before_utc == T0 - timedelta(minutes=5)
    assert cert.not_valid_after_utc == T0 + timedelta(days=100)
    assert pki.cert_matches_key(authority.cert_pem, authority.key_pem)

    info = pki.read_certificate(authority.cert_pem)
    assert info.is_ca
    assert info.identity == Identity("cluster-ca")
    assert info.issuer_common_name == "cluster-ca"


@pytest.mark.parametrize(
    ("profile", "usages"),
    [
        (Profile.SERVER, {ExtendedKeyUsageOID.SERVER_AUTH}),
        (Profile.CLIENT, {ExtendedKeyUsageOID.CLIENT_AUTH}),
        (Profile.PEER, {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
    ],
)
def test_leaf_certificate_extensions(profile: Profile, usages: set[x509.ObjectIdentifier]) -> None:
    leaf = issue(NODE_ID, profile, now=T0)
    cert = cert_of(leaf.cert_pem)
    ca_cert = cert_of(ca().cert_pem)

    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == usages
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(alt_names.get_values_for_type(x509.DNSName)) == {"w1", "w1.lan"}
    assert set(alt_names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("fd00::1"),
    }
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:w1"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes"
    ]
    assert cert.issuer == ca_cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_before_utc == T0 - timedelta(minutes=5)
    assert cert.not_valid_after_utc == T0 + timedelta(days=365)
    assert pki.cert_matches_key(leaf.cert_pem, leaf.key_pem)


def test_read_certificate_of_a_leaf() -> None:
    leaf = issue(NODE_ID, Profile.SERVER, now=T0, validity_days=10)
    info = pki.read_certificate(leaf.cert_pem)
    assert info.identity == NODE_ID
    assert not info.is_ca
    assert info.issuer_common_name == "kaji-test-ca"
    assert info.not_before == T0 - timedelta(minutes=5)
    assert info.not_after == T0 + timedelta(days=10)
    assert info.not_after.tzinfo is not None
    assert info.serial == cert_of(leaf.cert_pem).serial_number


def test_serials_are_random_and_distinct() -> None:
    serials = {
        pki.read_certificate(pki.sign_csr(node_csr(), ca(), Profile.PEER)).serial for _ in range(5)
    }
    assert len(serials) == 5
    assert all(s > 2**64 for s in serials)


def test_leaf_never_outlives_its_ca() -> None:
    short_ca = pki.create_ca("short-lived", validity_days=30, now=T0)
    leaf = pki.sign_csr(
        node_csr(), short_ca, Profile.PEER, validity_days=365, now=T0 + timedelta(days=1)
    )
    assert pki.read_certificate(leaf).not_after == T0 + timedelta(days=30)
    pki.verify_chain(leaf, short_ca.cert_pem, Profile.PEER, now=T0 + timedelta(days=29))


def test_sign_refuses_an_expired_ca_a_foreign_key_and_a_bad_csr() -> None:
    short_ca = pki.create_ca("short-lived", validity_days=30, now=T0)
    with pytest.raises(PKIError, match="expired"):
        pki.sign_csr(node_csr(), short_ca, Profile.PEER, now=T0 + timedelta(days=31))

    mixed = CertificateAuthority(cert_pem=ca().cert_pem, key_pem=other_ca().key_pem)
    with pytest.raises(PKIError, match="does not match"):
        pki.sign_csr(node_csr(), mixed, Profile.PEER)

    leaf = issue(NODE_ID, Profile.PEER)
    not_a_ca = CertificateAuthority(cert_pem=leaf.cert_pem, key_pem=leaf.key_pem)
    with pytest.raises(PKIError, match="not a CA"):
        pki.sign_csr(node_csr(), not_a_ca, Profile.PEER)

    with pytest.raises(PKIError):
        pki.sign_csr(tampered_csr(), ca(), Profile.PEER)
    with pytest.raises(PKIError):
        pki.sign_csr(node_csr(), ca(), Profile.PEER, validity_days=0)


# --- verify_chain ------------------------------------------------------------------------------


def test_verify_chain_accepts_within_validity_and_profile() -> None:
    leaf = issue(NODE_ID, Profile.PEER, now=T0).cert_pem
    for profile in (None, Profile.SERVER, Profile.CLIENT, Profile.PEER):
        pki.verify_chain(leaf, ca().cert_pem, profile, now=T0)
    pki.verify_chain(leaf, ca().cert_pem, now=T0 + timedelta(days=364))
    pki.verify_chain(leaf, ca().cert_pem, now=T0 - timedelta(minutes=4))  # backdated 5 minutes


def test_verify_chain_refuses_another_ca() -> None:
    leaf = issue(NODE_ID, Profile.PEER, authority=other_ca()).cert_pem
    with pytest.raises(PKIError, match="issuer"):
        pki.verify_chain(leaf, ca().cert_pem)


def test_verify_chain_checks_the_signature_not_just_the_name() -> None:
    impostor = pki.create_ca("kaji-test-ca")  # same name, different key
    leaf = issue(NODE_ID, Profile.PEER, authority=impostor).cert_pem
    with pytest.raises(PKIError, match="signature"):
        pki.verify_chain(leaf, ca().cert_pem)
    pki.verify_chain(leaf, impostor.cert_pem)


def test_verify_chain_checks_the_validity_window() -> None:
    leaf = issue(NODE_ID, Profile.PEER, now=T0).cert_pem
    with pytest.raises(PKIError, match="not valid before"):
        pki.verify_chain(leaf, ca().cert_pem, now=T0 - timedelta(minutes=6))
    with pytest.raises(PKIError, match="expired"):
        pki.verify_chain(leaf, ca().cert_pem, now=T0 + timedelta(days=365, seconds=1))


@pytest.mark.parametrize(
    ("issued", "wanted"),
    [
        (Profile.SERVER, Profile.CLIENT),
        (Profile.CLIENT, Profile.SERVER),
        (Profile.SERVER, Profile.PEER),
        (Profile.CLIENT, Profile.PEER),
    ],
)
def test_verify_chain_refuses_the_wrong_profile(issued: Profile, wanted: Profile) -> None:
    leaf = issue(NODE_ID, issued).cert_pem
    with pytest.raises(PKIError, match=f"not allowed for {wanted.value} use"):
        pki.verify_chain(leaf, ca().cert_pem, wanted)
    pki.verify_chain(leaf, ca().cert_pem, issued)


def test_verify_chain_refuses_garbage() -> None:
    with pytest.raises(PKIError):
        pki.verify_chain("not a cert", ca().cert_pem)
    with pytest.raises(PKIError):
        pki.verify_chain(issue(NODE_ID, Profile.PEER).cert_pem, "not a cert")


# --- Identity and CSRs -------------------------------------------------------------------------


def test_identity_of_normalises_addresses_and_refuses_bad_ones() -> None:
    identity = Identity.of("x", ["b", "a"], ["d"], ["fd00:0:0::1", "10.0.0.1"])
    assert identity == Identity(
        "x", frozenset({"a", "b"}), frozenset({"d"}), frozenset({"fd00::1", "10.0.0.1"})
    )
    assert Identity.of("x") == Identity("x")
    with pytest.raises(PKIError, match="not an IP address"):
        Identity.of("x", ip_addresses=["10.0.0.300"])
    with pytest.raises(TypeError):
        Identity.of("x", organizations="system:nodes")


def test_identity_differences() -> None:
    assert NODE_ID.differences(NODE_ID) == []
    other = Identity.of("system:node:w2", ["system:nodes", "extra"], ["w1"], ["10.0.0.1"])
    assert NODE_ID.differences(other) == [
        "common name: expected 'system:node:w1', got 'system:node:w2'",
        "unexpected organization: 'extra'",
        "missing DNS name: 'w1.lan'",
        "missing IP address: 'fd00::1'",
    ]


def test_read_csr_round_trips() -> None:
    for identity in (NODE_ID, SERVER_ID, CLIENT_ID, Identity.of("only-cn")):
        assert pki.read_csr(pki.create_csr(pki.generate_private_key(), identity)) == identity


def test_check_csr_accepts_the_same_identity_in_any_order_or_spelling() -> None:
    expected = Identity.of(
        "system:node:w1", ["system:nodes"], ["w1.lan", "w1"], ["FD00::0:1", "10.0.0.1"]
    )
    assert pki.check_csr(node_csr(), expected) == NODE_ID


def _changed(**changes: Any) -> Identity:
    return dataclasses.replace(NODE_ID, **changes)


@pytest.mark.parametrize(
    ("expected", "messages"),
    [
        (
            _changed(common_name="system:node:w2"),
            ["common name: expected 'system:node:w2', got 'system:node:w1'"],
        ),
        (
            _changed(organizations=frozenset({"system:masters"})),
            ["missing organization: 'system:masters'", "unexpected organization: 'system:nodes'"],
        ),
        (_changed(organizations=frozenset()), ["unexpected organization: 'system:nodes'"]),
        (_changed(dns_names=frozenset({"w1"})), ["unexpected DNS name: 'w1.lan'"]),
        (
            _changed(dns_names=NODE_ID.dns_names | {"w1.other"}),
            ["missing DNS name: 'w1.other'"],
        ),
        (_changed(ip_addresses=frozenset({"10.0.0.1"})), ["unexpected IP address: 'fd00::1'"]),
        (
            _changed(ip_addresses=NODE_ID.ip_addresses | {"10.0.0.2"}),
            ["missing IP address: '10.0.0.2'"],
        ),
        (
            _changed(
                common_name="w9", dns_names=frozenset(), ip_addresses=frozenset({"10.0.0.9"})
            ),
            [
                "common name: expected 'w9', got 'system:node:w1'",
                "unexpected DNS name: 'w1', 'w1.lan'",
                "missing IP address: '10.0.0.9'",
                "unexpected IP address: '10.0.0.1', 'fd00::1'",
            ],
        ),
    ],
)
def test_check_csr_names_every_difference(expected: Identity, messages: list[str]) -> None:
    with pytest.raises(IdentityMismatch) as raised:
        pki.check_csr(node_csr(), expected)
    for message in messages:
        assert message in str(raised.value)
    assert isinstance(raised.value, PKIError)


def tampered_csr() -> str:
    """A well-formed CSR whose subject was edited after signing."""
    csr = x509.load_pem_x509_csr(node_csr().encode())
    der = csr.public_bytes(serialization.Encoding.DER)
    assert der.count(b"system:node:w1") == 1
    edited = x509.load_der_x509_csr(der.replace(b"system:node:w1", b"system:node:w2"))
    return pem(edited)


def _p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


CN = x509.NameAttribute(NameOID.COMMON_NAME, "w1")

BAD_CSRS: dict[str, Callable[[], str]] = {
    "empty": lambda: "",
    "garbage": lambda: "hello, I am a CSR",
    "truncated": lambda: node_csr()[: len(node_csr()) // 2],
    "truncated body": lambda: node_csr().replace(node_csr().splitlines()[3] + "\n", ""),
    "oversized": lambda: "#" * 17_000 + "\n" + node_csr(),
    "certificate": lambda: issue(NODE_ID, Profile.PEER).cert_pem,
    "private key": lambda: pki.generate_private_key(),
    "bad self-signature": tampered_csr,
    "RSA key": lambda: raw_csr(rsa_key(), [CN]),
    "P-384 key": lambda: raw_csr(ec.generate_private_key(ec.SECP384R1()), [CN]),
    "Ed25519 key": lambda: raw_csr(ed25519.Ed25519PrivateKey.generate(), [CN]),
    "SHA-384": lambda: raw_csr(_p256(), [CN], algorithm=hashes.SHA384()),
    "no CN": lambda: raw_csr(_p256(), [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "o")]),
    "two CNs": lambda: raw_csr(_p256(), [CN, x509.NameAttribute(NameOID.COMMON_NAME, "w2")]),
    "OU": lambda: raw_csr(
        _p256(), [CN, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u")]
    ),
    "URI SAN": lambda: raw_csr(_p256(), [CN], [x509.UniformResourceIdentifier("spiffe://x/y")]),
    "email SAN": lambda: raw_csr(_p256(), [CN], [x509.RFC822Name("a@example.com")]),
}


@pytest.mark.parametrize("kind", list(BAD_CSRS))
def test_read_csr_refuses_what_is_not_a_good_csr(kind: str) -> None:
    text = BAD_CSRS[kind]()
    with pytest.raises(PKIError) as raised:
        pki.read_csr(text)
    assert not isinstance(raised.value, IdentityMismatch)
    with pytest.raises(PKIError):
        pki.check_csr(text, NODE_ID)
    with pytest.raises(PKIError):
        pki.sign_csr(text, ca(), Profile.PEER)


def test_refusal_messages_say_why() -> None:
    assert "larger than 16384" in str(raises(pki.read_csr, BAD_CSRS["oversized"]()))
    assert "signature" in str(raises(pki.read_csr, tampered_csr()))
    assert "P-256" in str(raises(pki.read_csr, BAD_CSRS["RSA key"]()))
    assert "SHA-256" in str(raises(pki.read_csr, BAD_CSRS["SHA-384"]()))
    assert "subject alt name" in str(raises(pki.read_csr, BAD_CSRS["URI SAN"]()))


def raises(function: Callable[[str], object], text: str) -> PKIError:
    with pytest.raises(PKIError) as raised:
        function(text)
    return raised.value


def test_create_csr_refuses_a_non_p256_key() -> None:
    rsa_pem = rsa_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PKIError, match="P-256"):
        pki.create_csr(rsa_pem.decode(), NODE_ID)
    with pytest.raises(PKIError):
        pki.create_csr("garbage", NODE_ID)


# --- fuzzing: only PKIError ever escapes -------------------------------------------------------


def outcome(function: Callable[[str], R], text: str) -> R | PKIError:
    """Run `function`; return its result or the PKIError it raised (anything else fails)."""
    try:
        return function(text)
    except PKIError as error:
        return error


def armoured(label: str, data: bytes) -> str:
    body = base64.encodebytes(data).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


ARBITRARY_TEXT = st.one_of(
    st.text(max_size=2000),
    st.binary(max_size=2000).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=2000).map(lambda b: armoured("CERTIFICATE REQUEST", b)),
    st.binary(max_size=2000).map(lambda b: armoured("CERTIFICATE", b)),
)


@cache
def _node_csr_der() -> bytes:
    return x509.load_pem_x509_csr(node_csr().encode()).public_bytes(serialization.Encoding.DER)


@cache
def _leaf_der() -> bytes:
    return cert_of(issue(NODE_ID, Profile.PEER).cert_pem).public_bytes(serialization.Encoding.DER)


def mutations(der: Callable[[], bytes], label: str) -> st.SearchStrategy[str]:
    """Valid DER with bytes overwritten, deleted or cut off, re-armoured as PEM."""

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        data = bytearray(der())
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["set", "delete", "cut"]))
            if action == "set":
                data[index] = draw(st.integers(0, 255))
            elif action == "delete":
                del data[index]
            else:
                del data[index:]
            if not data:
                break
        return armoured(label, bytes(data))

    return mutate()


@FUZZ
@given(ARBITRARY_TEXT)
def test_fuzz_read_csr_raises_only_pki_error(text: str) -> None:
    assert isinstance(outcome(pki.read_csr, text), PKIError)
    assert isinstance(outcome(lambda t: pki.check_csr(t, NODE_ID), text), PKIError)


@FUZZ
@given(mutations(_node_csr_der, "CERTIFICATE REQUEST"))
def test_fuzz_mutated_csr_raises_only_pki_error(text: str) -> None:
    result = outcome(pki.read_csr, text)
    assert isinstance(result, (Identity, PKIError))
    if isinstance(result, Identity):  # a mutation the signature still covers must be harmless
        assert result == NODE_ID


@pytest.mark.filterwarnings(
    "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
)
@FUZZ
@given(st.one_of(ARBITRARY_TEXT, mutations(_leaf_der, "CERTIFICATE")))
def test_fuzz_certificate_readers_raise_only_pki_error(text: str) -> None:
    assert isinstance(outcome(pki.read_certificate, text), (pki.CertificateInfo, PKIError))
    assert isinstance(
        outcome(lambda t: pki.verify_chain(t, ca().cert_pem), text), (type(None), PKIError)
    )
    assert isinstance(outcome(lambda t: pki.expires_within(t, 30), text), (bool, PKIError))
    assert isinstance(
        outcome(lambda t: pki.cert_matches_key(t, ca().key_pem), text), (bool, PKIError)
    )
    assert pki.renewal_due(text) in (True, False)


# --- expiry and key matching -------------------------------------------------------------------


def test_renewal_due_after_two_thirds_of_the_lifetime() -> None:
    leaf = issue(NODE_ID, Profile.PEER, now=T0).cert_pem  # T0-5min .. T0+365d
    assert not pki.renewal_due(leaf, now=T0)
    assert not pki.renewal_due(leaf, now=T0 + timedelta(days=243))  # 122 days left > 121.67
    assert pki.renewal_due(leaf, now=T0 + timedelta(days=244))  # 121 days left
    assert pki.renewal_due(leaf, now=T0 + timedelta(days=400))  # expired
    assert pki.renewal_due(leaf, now=(T0 + timedelta(days=244)).replace(tzinfo=None))  # naive=UTC
    assert not pki.renewal_due(issue(NODE_ID, Profile.PEER).cert_pem)  # right now, fresh
    assert pki.renewal_due("not a certificate")


def test_expires_within() -> None:
    leaf = issue(NODE_ID, Profile.PEER, now=T0).cert_pem
    assert not pki.expires_within(leaf, 30, now=T0)
    assert not pki.expires_within(leaf, 30, now=T0 + timedelta(days=334))
    assert pki.expires_within(leaf, 30, now=T0 + timedelta(days=336))
    assert pki.expires_within(leaf, 0, now=T0 + timedelta(days=366))
    with pytest.raises(PKIError):
        pki.expires_within("not a certificate", 30)


def test_cert_matches_key() -> None:
    leaf = issue(NODE_ID, Profile.PEER)
    assert pki.cert_matches_key(leaf.cert_pem, leaf.key_pem)
    assert not pki.cert_matches_key(leaf.cert_pem, pki.generate_private_key())
    assert not pki.cert_matches_key(leaf.cert_pem, ca().key_pem)
    with pytest.raises(PKIError):
        pki.cert_matches_key(leaf.cert_pem, "garbage")
    with pytest.raises(PKIError):
        pki.cert_matches_key("garbage", leaf.key_pem)

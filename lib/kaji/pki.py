"""Keys, CSRs, certificate authorities, signing, verification and expiry for the kaji charms.

Everything is ECDSA P-256 with SHA-256. Private keys never leave the unit that generated
them: a unit sends a CSR, the issuing leader checks the CSR's identity against what it
expects for that unit (check_csr) and signs it under a profile (sign_csr).

Every function that reads PEM text raises PKIError (a ValueError) when the text is not
what it should be, whatever the reason; no other exception escapes for bad input.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kaji import clock

MAX_PEM_BYTES = 16 * 1024
"""Largest PEM text any function here accepts."""

BACKDATE = timedelta(minutes=5)
"""How far not_before is set before the issuing time, to absorb clock skew between machines."""


class PKIError(ValueError):
    """Unreadable PEM, bad signature, refused CSR or failed verification."""


class IdentityMismatch(PKIError):  # noqa: N818 (name fixed by the API contract)
    """A CSR's identity differs from the expected one; the message lists every difference."""


class Profile(str, enum.Enum):
    """What a leaf certificate may be used for (its extended key usage)."""

    SERVER = "server"
    CLIENT = "client"
    PEER = "peer"  # server and client


_USAGE_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}

_PROFILE_USAGES: dict[Profile, frozenset[x509.ObjectIdentifier]] = {
    Profile.SERVER: frozenset({ExtendedKeyUsageOID.SERVER_AUTH}),
    Profile.CLIENT: frozenset({ExtendedKeyUsageOID.CLIENT_AUTH}),
    Profile.PEER: frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
}


def _normalise_ip(address: object) -> str:
    try:
        return ipaddress.ip_address(address).compressed  # type: ignore[arg-type]
    except ValueError as error:
        raise PKIError(f"not an IP address: {address!r}") from error


def _strings(name: str, values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be an iterable of strings, not a single {type(values)}")
    return frozenset(values)


def _describe(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values))


@dataclass(frozen=True)
class Identity:
    """Who a certificate or CSR names: subject CN and O, and the DNS/IP subject alt names."""

    common_name: str
    organizations: frozenset[str] = field(default_factory=frozenset)
    dns_names: frozenset[str] = field(default_factory=frozenset)
    ip_addresses: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        common_name: str,
        organizations: Iterable[str] = (),
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    ) -> Identity:
        """Build an Identity from any iterables, normalising IP addresses.

        Raises:
            PKIError: an IP address does not parse.
            TypeError: a bare string was given where an iterable of strings belongs.
        """
        if isinstance(ip_addresses, (str, bytes)):
            raise TypeError("ip_addresses must be an iterable of addresses, not a single string")
        return cls(
            common_name=common_name,
            organizations=_strings("organizations", organizations),
            dns_names=_strings("dns_names", dns_names),
            ip_addresses=frozenset(_normalise_ip(a) for a in ip_addresses),
        )

    def differences(self, other: Identity) -> list[str]:
        """Describe how `other` differs from this (expected) identity; empty when equal."""
        found = []
        if self.common_name != other.common_name:
            found.append(f"common name: expected {self.common_name!r}, got {other.common_name!r}")
        for label, expected, actual in (
            ("organization", self.organizations, other.organizations),
            ("DNS name", self.dns_names, other.dns_names),
            ("IP address", self.ip_addresses, other.ip_addresses),
        ):
            if missing := expected - actual:
                found.append(f"missing {label}: {_describe(missing)}")
            if extra := actual - expected:
                found.append(f"unexpected {label}: {_describe(extra)}")
        return found


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key, both PEM."""

    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class CertificateInfo:
    """What a certificate says, with times as timezone-aware UTC datetimes."""

    identity: Identity
    serial: int
    not_before: datetime
    not_after: datetime
    is_ca: bool
    issuer_common_name: str


# --- parsing helpers ---------------------------------------------------------------------------


def _pem_bytes(pem: str, what: str) -> bytes:
    if isinstance(pem, bytes):
        pem = pem.decode("ascii", errors="replace")
    if not isinstance(pem, str):
        raise PKIError(f"{what} must be PEM text, not {type(pem).__name__}")
    if len(pem) > MAX_PEM_BYTES:
        raise PKIError(f"{what} is larger than {MAX_PEM_BYTES} bytes")
    data = pem.encode("utf-8", errors="replace")
    if len(data) > MAX_PEM_BYTES:
        raise PKIError(f"{what} is larger than {MAX_PEM_BYTES} bytes")
    return data


def _load_certificate(cert_pem: str, what: str = "certificate") -> x509.Certificate:
    data = _pem_bytes(cert_pem, what)
    try:
        cert = x509.load_pem_x509_certificate(data)
        # Touch the parts we rely on, so that lazily-parsed garbage fails here.
        cert.subject, cert.issuer, cert.extensions  # noqa: B018
        cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
    except Exception as error:
        raise PKIError(f"unreadable {what}: {error}") from error
    return cert


def _public_key(cert: x509.Certificate, what: str) -> CertificatePublicKeyTypes:
    try:
        return cert.public_key()
    except Exception as error:
        raise PKIError(f"unreadable public key in the {what}: {error}") from error


def _load_private_key(key_pem: str) -> ec.EllipticCurvePrivateKey:
    data = _pem_bytes(key_pem, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except Exception as error:
        raise PKIError(f"unreadable private key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PKIError("private key is not an ECDSA P-256 key")
    return key


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return clock.now()  # the machine's clock, or the offline model's
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)


def _name(identity: Identity) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in sorted(identity.organizations)
    ]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name))
    return x509.Name(attributes)


def _subject_alt_names(identity: Identity) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(identity.dns_names)]
    names.extend(
        x509.IPAddress(ipaddress.ip_address(a))
        for a in sorted(
            identity.ip_addresses,
            key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a).packed),
        )
    )
    return names


def _string_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    values = []
    for attribute in name.get_attributes_for_oid(oid):
        if not isinstance(attribute.value, str):
            raise PKIError(f"subject attribute {oid.dotted_string} is not a string")
        values.append(attribute.value)
    return values


def _common_name(name: x509.Name) -> str:
    names = _string_values(name, NameOID.COMMON_NAME)
    return names[0] if names else ""


def _san_of(extensions: x509.Extensions) -> x509.SubjectAlternativeName | None:
    try:
        return extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _ski_of(cert: x509.Certificate) -> x509.SubjectKeyIdentifier | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


# --- keys and CSRs -----------------------------------------------------------------------------


def generate_private_key() -> str:
    """Generate an ECDSA P-256 private key, as unencrypted PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_pem(key_pem: str) -> str:
    """The SubjectPublicKeyInfo PEM of a private key."""
    key = _load_private_key(key_pem)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def create_csr(key_pem: str, identity: Identity) -> str:
    """Create a SHA-256 CSR for `identity` (CN, one O attribute per organisation, DNS/IP SANs)."""
    key = _load_private_key(key_pem)
    try:
        builder = x509.CertificateSigningRequestBuilder().subject_name(_name(identity))
        if alt_names := _subject_alt_names(identity):
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        csr = builder.sign(key, hashes.SHA256())
    except (ValueError, TypeError) as error:
        raise PKIError(f"cannot create a CSR for {identity}: {error}") from error
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _load_csr(csr_pem: str) -> tuple[x509.CertificateSigningRequest, Identity]:
    data = _pem_bytes(csr_pem, "CSR")
    try:
        csr = x509.load_pem_x509_csr(data)
        return csr, _csr_identity(csr)
    except PKIError:
        raise
    except Exception as error:
        raise PKIError(f"unreadable CSR: {error}") from error


def _csr_identity(csr: x509.CertificateSigningRequest) -> Identity:
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise PKIError("CSR key is not an ECDSA P-256 key")
    if not isinstance(csr.signature_hash_algorithm, hashes.SHA256):
        raise PKIError("CSR is not signed with SHA-256")
    if not csr.is_signature_valid:
        raise PKIError("CSR signature does not verify with its own key")

    subject = csr.subject
    allowed = {NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME}
    if other := sorted({a.oid.dotted_string for a in subject if a.oid not in allowed}):
        raise PKIError(f"CSR subject has attributes other than CN and O: {', '.join(other)}")
    common_names = _string_values(subject, NameOID.COMMON_NAME)
    if len(common_names) != 1 or not common_names[0]:
        raise PKIError("CSR subject must have exactly one non-empty common name")
    organizations = _string_values(subject, NameOID.ORGANIZATION_NAME)

    dns_names: list[str] = []
    ip_addresses: list[str] = []
    if (alt_names := _san_of(csr.extensions)) is not None:
        for name in alt_names:
            if isinstance(name, x509.DNSName):
                dns_names.append(name.value)
            elif isinstance(name, x509.IPAddress) and not isinstance(
                name.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)
            ):
                ip_addresses.append(name.value.compressed)
            else:
                raise PKIError(f"CSR has an unsupported subject alt name: {name}")
    return Identity.of(common_names[0], organizations, dns_names, ip_addresses)


def read_csr(csr_pem: str) -> Identity:
    """Read and validate a CSR (P-256 key, SHA-256, valid self-signature); return its identity."""
    return _load_csr(csr_pem)[1]


def check_csr(csr_pem: str, expected: Identity) -> Identity:
    """Read a CSR and insist its identity is exactly `expected`.

    Raises:
        IdentityMismatch: the identity differs; the message lists every difference.
        PKIError: the CSR is unreadable or invalid.
    """
    identity = read_csr(csr_pem)
    if differences := expected.differences(identity):
        raise IdentityMismatch(
            f"CSR for {identity.common_name!r} does not match: {'; '.join(differences)}"
        )
    return identity


# --- certificate authorities and signing ---------------------------------------------------------


def create_ca(
    common_name: str, validity_days: int = 3650, now: datetime | None = None
) -> CertificateAuthority:
    """Create a self-signed CA (path length 0) with a fresh P-256 key."""
    if validity_days <= 0:
        raise PKIError("validity_days must be positive")
    issued = _utc(now).replace(microsecond=0)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    try:
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(issued - BACKDATE)
            .not_valid_after(issued + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
    except ValueError as error:
        raise PKIError(f"cannot create a CA named {common_name!r}: {error}") from error
    return CertificateAuthority(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
    )


def sign_csr(
    csr_pem: str,
    ca: CertificateAuthority,
    profile: Profile,
    validity_days: int = 365,
    now: datetime | None = None,
) -> str:
    """Sign a CSR under `profile` and return the leaf certificate PEM.

    The leaf carries the CSR's CN, O and DNS/IP SANs, starts 5 minutes before `now`, and
    never outlives the CA. Check the CSR's identity with check_csr before calling this.
    """
    profile = Profile(profile)
    if validity_days <= 0:
        raise PKIError("validity_days must be positive")
    csr, identity = _load_csr(csr_pem)
    ca_cert = _load_certificate(ca.cert_pem, "CA certificate")
    ca_key = _load_private_key(ca.key_pem)
    if not _is_ca(ca_cert):
        raise PKIError("CA certificate is not a CA")
    if not _same_public_key(_public_key(ca_cert, "CA certificate"), ca_key.public_key()):
        raise PKIError("CA key does not match the CA certificate")

    issued = _utc(now).replace(microsecond=0)
    not_before = issued - BACKDATE
    not_after = min(issued + timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    if not_after <= issued:
        raise PKIError(f"CA certificate expired at {ca_cert.not_valid_after_utc.isoformat()}")
    ca_ski = _ski_of(ca_cert)
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
        if ca_ski is not None
        else x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    )
    public_key = csr.public_key()
    if not isinstance(
        public_key, ec.EllipticCurvePublicKey
    ):  # pragma: no cover (_load_csr checks)
        raise PKIError("CSR key is not an ECDSA P-256 key")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(identity))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                sorted(_PROFILE_USAGES[profile], key=lambda oid: oid.dotted_string)
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )
    if alt_names := _subject_alt_names(identity):
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    try:
        cert = builder.sign(ca_key, hashes.SHA256())
    except ValueError as error:
        raise PKIError(f"cannot sign the CSR for {identity.common_name!r}: {error}") from error
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --- reading and verifying certificates --------------------------------------------------------


def read_certificate(cert_pem: str) -> CertificateInfo:
    """Read a certificate's identity, serial, validity window, CA flag and issuer CN."""
    cert = _load_certificate(cert_pem)
    try:
        dns_names: list[str] = []
        ip_addresses: list[str] = []
        if (alt_names := _san_of(cert.extensions)) is not None:
            dns_names = alt_names.get_values_for_type(x509.DNSName)
            ip_addresses = [
                a.compressed
                for a in alt_names.get_values_for_type(x509.IPAddress)
                if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address))
            ]
        identity = Identity.of(
            _common_name(cert.subject),
            _string_values(cert.subject, NameOID.ORGANIZATION_NAME),
            dns_names,
            ip_addresses,
        )
        return CertificateInfo(
            identity=identity,
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            is_ca=_is_ca(cert),
            issuer_common_name=_common_name(cert.issuer),
        )
    except PKIError:
        raise
    except Exception as error:
        raise PKIError(f"unreadable certificate: {error}") from error


def verify_chain(
    cert_pem: str,
    ca_cert_pem: str,
    profile: Profile | None = None,
    now: datetime | None = None,
) -> None:
    """Check that `cert_pem` was issued by the CA and is valid at `now` (for `profile`, if given).

    Raises:
        PKIError: wrong issuer, bad signature, outside its validity window (or the CA's),
            or its extended key usage does not allow `profile`.
    """
    cert = _load_certificate(cert_pem)
    ca_cert = _load_certificate(ca_cert_pem, "CA certificate")
    at = _utc(now)
    if cert.issuer != ca_cert.subject:
        raise PKIError(
            f"certificate issuer {cert.issuer.rfc4514_string()!r} is not the CA "
            f"{ca_cert.subject.rfc4514_string()!r}"
        )
    if not _is_ca(ca_cert):
        raise PKIError("the issuing certificate is not a CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as error:
        raise PKIError("certificate signature does not verify with the CA key") from error
    for what, checked in (("certificate", cert), ("CA certificate", ca_cert)):
        if at < checked.not_valid_before_utc:
            raise PKIError(
                f"{what} is not valid before {checked.not_valid_before_utc.isoformat()}"
            )
        if at > checked.not_valid_after_utc:
            raise PKIError(f"{what} expired at {checked.not_valid_after_utc.isoformat()}")
    if profile is not None:
        needed = _PROFILE_USAGES[Profile(profile)]
        try:
            usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            usages = set()
        if missing := needed - usages:
            names = ", ".join(sorted(_USAGE_NAMES[oid] for oid in missing))
            raise PKIError(
                f"certificate is not allowed for {Profile(profile).value} use: no {names}"
            )


def _same_public_key(
    a: CertificatePublicKeyTypes | PublicKeyTypes, b: CertificatePublicKeyTypes | PublicKeyTypes
) -> bool:
    def spki(key: CertificatePublicKeyTypes | PublicKeyTypes) -> bytes:
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    return spki(a) == spki(b)


def cert_matches_key(cert_pem: str, key_pem: str) -> bool:
    """Whether the certificate carries the public half of the private key.

    Raises:
        PKIError: either PEM is unreadable.
    """
    cert = _load_certificate(cert_pem)
    data = _pem_bytes(key_pem, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except Exception as error:
        raise PKIError(f"unreadable private key: {error}") from error
    return _same_public_key(_public_key(cert, "certificate"), key.public_key())


def csr_matches_key(csr_pem: str, key_pem: str) -> bool:
    """Whether the CSR carries the public half of the private key.

    Raises:
        PKIError: either PEM is unreadable.
    """
    csr, _ = _load_csr(csr_pem)
    return _same_public_key(csr.public_key(), _load_private_key(key_pem).public_key())


def cert_matches_csr(cert_pem: str, csr_pem: str) -> bool:
    """Whether the certificate answers the CSR: the same public key and the same identity.

    Raises:
        PKIError: either PEM is unreadable.
    """
    csr, identity = _load_csr(csr_pem)
    cert = _load_certificate(cert_pem)
    return (
        _same_public_key(_public_key(cert, "certificate"), csr.public_key())
        and read_certificate(cert_pem).identity == identity
    )


def renewal_due(cert_pem: str, now: datetime | None = None) -> bool:
    """Whether under a third of the lifetime remains; also True when expired or unreadable."""
    try:
        cert = _load_certificate(cert_pem)
    except PKIError:
        return True
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    return not_after - _utc(now) < (not_after - not_before) / 3


def expires_within(cert_pem: str, days: int, now: datetime | None = None) -> bool:
    """Whether the certificate expires within `days` of `now` (or already has).

    Raises:
        PKIError: the certificate is unreadable.
    """
    cert = _load_certificate(cert_pem)
    return cert.not_valid_after_utc <= _utc(now) + timedelta(days=days)

"""Peer relation ``control-plane:cluster``: control-plane component certificates.

Unit databag (each control-plane unit)::

    hostname        str             the machine's hostname (DNS-1123 subdomain)
    addresses       list[str]       the machine's IP addresses (sorted, compressed form)
    csrs            {purpose: str}  PEM CSR per purpose (see PURPOSES); a unit may send a subset
    public-address  str (optional)  the unit's public address as Juju reports it (an IP or a
                                    DNS name), for clients outside the cloud (``juju expose``)

Application databag (control-plane leader)::

    ca-cert              str                       cluster CA certificate PEM (public part)
    front-proxy-ca-cert  str                       front-proxy CA certificate PEM (public part)
    certificates         {unit: {purpose: str}}    signed certificate PEM per unit and purpose
    departed-nodes       list[str] (optional)      Node objects of departed workers still to be
                                                   deleted (kept here so a later leader retries)

CA keys and the service-account signing key are not here: they live in app-owned Juju
secrets. Purposes and identities (profile in brackets; signer is the cluster CA unless noted):

- ``apiserver`` [server]: CN ``kube-apiserver``, no O; DNS SANs = hostname, ``kubernetes``,
  ``kubernetes.default``, ``kubernetes.default.svc``, ``kubernetes.default.svc.<domain>``
  and configured extra names; IP SANs = addresses, the first service IP and extra IPs; the
  public address as a DNS or IP SAN (see expected_apiserver_identity).
- ``apiserver-kubelet-client`` [client]: CN ``kube-apiserver-kubelet-client``, no O (the
  control plane binds ``system:kubelet-api-admin`` to this user).
- ``front-proxy-client`` [client, front-proxy CA]: CN ``front-proxy-client``, no O.
- ``controller-manager`` [client]: CN ``system:kube-controller-manager``, no O.
- ``scheduler`` [client]: CN ``system:kube-scheduler``, no O.
- ``admin`` [client]: CN ``kubernetes-admin``, O ``system:masters``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kaji.interfaces._base import (
    Fields,
    RelationDataError,
    check_certificate,
    check_csr,
    check_dns_subdomain,
    check_ip,
    check_ips,
    check_unit_map,
    encode,
    expect_map,
    expect_str_list,
    expect_str_map,
)
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from kaji import pki
    from kaji.pki import Identity
else:
    pki = lazy_import("kaji.pki")  # cryptography only when an identity is built

RELATION = "cluster"
INTERFACE = "kaji-control-plane-peers"
APISERVER = "apiserver"
APISERVER_COMMON_NAME = "kube-apiserver"

CLIENT_IDENTITIES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ()),
    "front-proxy-client": ("front-proxy-client", ()),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "admin": ("kubernetes-admin", ("system:masters",)),
}
"""Client purpose -> (common name, organizations). The same for every unit."""

PURPOSES = (APISERVER, *CLIENT_IDENTITIES)
"""Every purpose a unit may request a certificate for."""

FRONT_PROXY_PURPOSES = frozenset({"front-proxy-client"})
"""Purposes signed by the front-proxy CA rather than the cluster CA."""


def client_identity(purpose: str) -> Identity:
    """The fixed identity of a client purpose.

    Raises:
        RelationDataError: not a client purpose.
    """
    if purpose not in CLIENT_IDENTITIES:
        raise RelationDataError("csrs", f"not a client purpose: {purpose[:100]!r}")
    common_name, organizations = CLIENT_IDENTITIES[purpose]
    return pki.Identity.of(common_name, organizations=organizations)


def expected_apiserver_identity(
    hostname: str,
    addresses: Iterable[str],
    service_ip: str,
    dns_domain: str,
    extra_dns_names: Iterable[str] = (),
    extra_ip_addresses: Iterable[str] = (),
    public_address: str | None = None,
) -> Identity:
    """The exact identity of a unit's kube-apiserver serving certificate.

    Raises:
        RelationDataError: a bad hostname, address, domain or public address.
    """
    check_dns_subdomain("hostname", hostname)
    check_dns_subdomain("dns-domain", dns_domain)
    dns_names = [
        hostname,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{dns_domain}",
        *(check_dns_subdomain("extra-dns-names", name) for name in extra_dns_names),
    ]
    ips = [
        *check_ips("addresses", addresses),
        check_ip("service-ip", service_ip),
        *check_ips("extra-ip-addresses", extra_ip_addresses, allow_empty=True),
    ]
    if public_address is not None:
        public = check_public_address("public-address", public_address)
        (ips if _is_ip(public) else dns_names).append(public)
    return pki.Identity.of(APISERVER_COMMON_NAME, dns_names=dns_names, ip_addresses=ips)


def _is_ip(value: str) -> bool:
    try:
        check_ip("public-address", value)
    except RelationDataError:
        return False
    return True


def check_public_address(key: str, value: str) -> str:
    """A public address: an IP (returned compressed) or a lowercase DNS-1123 name.

    Raises:
        RelationDataError: neither.
    """
    if _is_ip(value):
        return check_ip(key, value)
    try:
        return check_dns_subdomain(key, value)
    except RelationDataError:
        raise RelationDataError(
            key, f"neither an IP address nor a DNS name: {value[:100]!r}"
        ) from None


def _check_purpose(key: str, purpose: str) -> str:
    if purpose not in PURPOSES:
        raise RelationDataError(key, f"unknown purpose {purpose[:100]!r}; expected {PURPOSES}")
    return purpose


@dataclass(frozen=True)
class ControlPlanePeerUnit:
    """What each control-plane unit tells its peers: where it is and what it needs signed."""

    hostname: str
    addresses: tuple[str, ...]
    csrs: Mapping[str, str] = field(default_factory=dict)
    public_address: str | None = None

    def __post_init__(self) -> None:
        check_dns_subdomain("hostname", self.hostname)
        addresses = check_ips("addresses", self.addresses)
        public = (
            None
            if self.public_address is None
            else check_public_address("public-address", self.public_address)
        )
        csrs = {}
        for purpose, pem in sorted(self.csrs.items()):
            key = f"csrs[{purpose[:100]}]"
            _check_purpose(key, purpose)
            if purpose == APISERVER:
                identity = check_csr(key, pem)
                if (
                    identity.common_name != APISERVER_COMMON_NAME
                    or identity.organizations
                    or self.hostname not in identity.dns_names
                    or not set(addresses) <= identity.ip_addresses
                    or (
                        public is not None
                        and public not in identity.dns_names | identity.ip_addresses
                    )
                ):
                    raise RelationDataError(
                        key,
                        f"expected CN {APISERVER_COMMON_NAME!r}, no O, and SANs naming this "
                        "unit's hostname, addresses and public address",
                    )
            else:
                check_csr(key, pem, client_identity(purpose))
            csrs[purpose] = pem
        object.__setattr__(self, "addresses", addresses)
        object.__setattr__(self, "csrs", csrs)
        object.__setattr__(self, "public_address", public)

    def to_databag(self) -> dict[str, str]:
        """Encode for the unit's own peer databag (no ``public-address`` key when unknown)."""
        return encode(
            {
                "hostname": self.hostname,
                "addresses": list(self.addresses),
                "csrs": dict(self.csrs),
                "public-address": self.public_address,
            }
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> ControlPlanePeerUnit:
        """Decode and validate.

        Checks known purposes, client CSRs with their fixed identities, and an apiserver CSR
        naming this unit's hostname and addresses.

        The leader still checks the apiserver CSR exactly against
        :func:`expected_apiserver_identity` before signing (it knows the service IP, domain
        and extra names).

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag)
        return cls(
            hostname=fields.string("hostname"),
            addresses=tuple(fields.string_list("addresses")),
            csrs=fields.string_map("csrs"),
            public_address=fields.optional_string("public-address"),
        )


def read_peer_unit(databag: Mapping[str, str]) -> ControlPlanePeerUnit | None:
    """A control-plane unit's peer data, or None while it has written nothing."""
    if not Fields(databag):
        return None
    return ControlPlanePeerUnit.from_databag(databag)


@dataclass(frozen=True)
class ControlPlanePeerApp:
    """What the control-plane leader tells every control-plane unit."""

    ca_cert: str
    front_proxy_ca_cert: str
    certificates: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    departed_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_certificate("ca-cert", self.ca_cert, ca=True)
        check_certificate("front-proxy-ca-cert", self.front_proxy_ca_cert, ca=True)
        certificates: dict[str, dict[str, str]] = {}
        for unit, by_purpose in check_unit_map("certificates", self.certificates).items():
            certificates[unit] = {}
            for purpose, pem in sorted(by_purpose.items()):
                key = f"certificates[{unit[:100]}][{purpose[:100]}]"
                _check_purpose(key, purpose)
                identity = check_certificate(key, pem, ca=False).identity
                expected = (
                    APISERVER_COMMON_NAME
                    if purpose == APISERVER
                    else CLIENT_IDENTITIES[purpose][0]
                )
                if identity.common_name != expected:
                    raise RelationDataError(
                        key, f"names {identity.common_name!r}, not {expected!r}"
                    )
                certificates[unit][purpose] = pem
        object.__setattr__(self, "certificates", certificates)
        names = sorted({check_dns_subdomain("departed-nodes", n) for n in self.departed_nodes})
        object.__setattr__(self, "departed_nodes", tuple(names))

    def certificates_for(self, unit_name: str) -> Mapping[str, str]:
        """The certificates issued to `unit_name`, by purpose (empty when none)."""
        return self.certificates.get(unit_name, {})

    def to_databag(self) -> dict[str, str]:
        """Encode for the control-plane application peer databag (leader only)."""
        return encode(
            {
                "ca-cert": self.ca_cert,
                "front-proxy-ca-cert": self.front_proxy_ca_cert,
                "certificates": {unit: dict(c) for unit, c in self.certificates.items()},
                "departed-nodes": list(self.departed_nodes) or None,
            },
            unbounded=("certificates", "departed-nodes"),
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> ControlPlanePeerApp:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag, unbounded=("certificates", "departed-nodes"))
        raw = expect_map("certificates", fields.required("certificates"))
        departed = fields.optional("departed-nodes")
        return cls(
            ca_cert=fields.string("ca-cert"),
            front_proxy_ca_cert=fields.string("front-proxy-ca-cert"),
            certificates={
                unit: expect_str_map(f"certificates[{unit[:100]}]", value)
                for unit, value in raw.items()
            },
            departed_nodes=tuple(
                () if departed is None else expect_str_list("departed-nodes", departed)
            ),
        )


def read_peer_app(databag: Mapping[str, str]) -> ControlPlanePeerApp | None:
    """The control-plane leader's peer data, or None while it has written nothing."""
    if not Fields(databag, unbounded=("certificates", "departed-nodes")):
        return None
    return ControlPlanePeerApp.from_databag(databag)

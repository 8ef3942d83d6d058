"""Interface ``kaji-kube-control``: control-plane (provider) serves worker (requirer).

Requirer unit databag (each worker unit)::

    node-name    str         Kubernetes node name, a DNS-1123 subdomain
    addresses    list[str]   the node's IP addresses (sorted, compressed form)
    kubelet-csr  str         PEM CSR, identity = expected_node_identity(node-name, addresses)

Provider unit databag (each control-plane unit)::

    api-endpoint  str   https URL of that unit's kube-apiserver

Provider application databag (control-plane leader)::

    ca-cert             str          PEM of the cluster CA certificate (public part only)
    certificates        {unit: str}  signed node certificate PEM per worker unit
    service-cidr        str          the cluster's service network (CIDR)
    dns-address         str          cluster DNS service IP, inside service-cidr
    dns-domain          str          cluster DNS domain, e.g. ``cluster.local``
    kubernetes-version  str          ``1.x.y``
    image-registry      str          registry (host[:port][/path]) for system images, valid
                                     by kaji.kubernetes.check_image_registry (the same check
                                     as the control plane's ``image-registry`` option)

Node identity: CN ``system:node:<node-name>``, O ``system:nodes``, SANs = the node name as a
DNS name and every address as an IP. One CSR per node: the certificate is signed with the
PEER profile and serves as the kubelet's client certificate, its serving certificate, and
kube-proxy's client certificate (the control plane binds the ``system:node-proxier`` role to
the ``system:nodes`` group), so a worker never holds a certificate for another identity.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kaji import kubernetes
from kaji.interfaces._base import (
    Fields,
    RelationDataError,
    check_certificate,
    check_cidr,
    check_csr,
    check_dns_subdomain,
    check_host_in,
    check_ip,
    check_ips,
    check_unit_map,
    check_url,
    encode,
    expect_str_map,
)
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from kaji import pki
    from kaji.pki import Identity
else:
    pki = lazy_import("kaji.pki")  # cryptography only when an identity is built

INTERFACE = "kaji-kube-control"
NODE_ORGANIZATION = "system:nodes"
NODE_COMMON_NAME_PREFIX = "system:node:"

_VERSION = re.compile(r"1\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})")


def check_image_registry(key: str, registry: str) -> str:
    """A registry prefix ``host[:port][/path]``, by the one definition both sides use.

    That definition is :func:`kaji.kubernetes.check_image_registry`, which the control plane's
    ``image-registry`` option is checked with too: a value the option accepts is never refused
    here, and the other way round.

    Raises:
        RelationDataError: not a registry prefix.
    """
    try:
        return kubernetes.check_image_registry(registry)
    except ValueError as error:
        raise RelationDataError(key, f"expected host[:port][/path]: {error}") from error


def expected_node_identity(node_name: str, addresses: Iterable[str]) -> Identity:
    """The identity a worker's kubelet CSR (and certificate) must carry.

    Raises:
        RelationDataError: a bad node name or address.
    """
    check_dns_subdomain("node-name", node_name)
    return pki.Identity.of(
        NODE_COMMON_NAME_PREFIX + node_name,
        organizations=[NODE_ORGANIZATION],
        dns_names=[node_name],
        ip_addresses=check_ips("addresses", addresses),
    )


def node_csr_problems(actual: Identity, expected: Identity) -> list[str]:
    """How a node CSR's identity differs from the node's, in words a status can show.

    Each problem reads ``<what> does not match ... (<detail>)``; empty when they are equal.
    Values the worker chose are cut short, since they end up in logs and statuses.
    """

    def shown(values: Iterable[str]) -> str:
        return repr(sorted(v[:60] for v in values)[:4])

    problems = []
    if actual.common_name != expected.common_name:
        problems.append(
            f"CN does not match its node name (asks for {actual.common_name[:80]!r},"
            f" expected {expected.common_name!r})"
        )
    if actual.organizations != expected.organizations:
        problems.append(
            f"O does not match {NODE_ORGANIZATION} (asks for {shown(actual.organizations)})"
        )
    if actual.dns_names != expected.dns_names:
        problems.append(
            f"DNS names do not match its node name (asks for {shown(actual.dns_names)})"
        )
    if actual.ip_addresses != expected.ip_addresses:
        problems.append(
            f"IP addresses do not match its addresses (asks for {shown(actual.ip_addresses)},"
            f" published {shown(expected.ip_addresses)})"
        )
    return problems


@dataclass(frozen=True)
class KubeControlRequirerUnit:
    """What one worker unit writes: its node name, addresses and node CSR."""

    node_name: str
    addresses: tuple[str, ...]
    kubelet_csr: str

    def __post_init__(self) -> None:
        addresses = check_ips("addresses", self.addresses)
        object.__setattr__(self, "addresses", addresses)
        expected = expected_node_identity(self.node_name, addresses)
        problems = node_csr_problems(check_csr("kubelet-csr", self.kubelet_csr), expected)
        if problems:
            raise RelationDataError("kubelet-csr", "; ".join(problems))

    def to_databag(self) -> dict[str, str]:
        """Encode for the worker unit's own databag."""
        return encode(
            {
                "node-name": self.node_name,
                "addresses": list(self.addresses),
                "kubelet-csr": self.kubelet_csr,
            }
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> KubeControlRequirerUnit:
        """Decode and validate, including that the CSR names this node and these addresses.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag)
        return cls(
            node_name=fields.string("node-name"),
            addresses=tuple(fields.string_list("addresses")),
            kubelet_csr=fields.string("kubelet-csr"),
        )


def read_requirer_unit(
    databag: Mapping[str, str], *, allowed_addresses: Collection[str] | None = None
) -> KubeControlRequirerUnit | None:
    """Provider side: read one worker unit's databag.

    Args:
        databag: the worker unit's databag.
        allowed_addresses: when given (e.g. :func:`juju_addresses` of the same databag), every
            address the worker claims must be one of these.

    Returns:
        None while the unit has written nothing yet.

    Raises:
        RelationDataError: malformed data, a CSR for another identity, or an address the
            unit is not known to hold.
    """
    if not Fields(databag):
        return None
    data = KubeControlRequirerUnit.from_databag(databag)
    if allowed_addresses is not None:
        allowed = {check_ip("allowed-addresses", a) for a in allowed_addresses}
        if unknown := sorted(set(data.addresses) - allowed):
            raise RelationDataError("addresses", f"not addresses of this unit: {unknown}")
    return data


@dataclass(frozen=True)
class KubeControlProviderUnit:
    """What each control-plane unit writes: its own API server endpoint."""

    api_endpoint: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_endpoint", check_url("api-endpoint", self.api_endpoint))

    def to_databag(self) -> dict[str, str]:
        """Encode for the control-plane unit's own databag."""
        return encode({"api-endpoint": self.api_endpoint})

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> KubeControlProviderUnit:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        return cls(api_endpoint=Fields(databag).string("api-endpoint"))


def read_provider_unit(databag: Mapping[str, str]) -> KubeControlProviderUnit | None:
    """Requirer side: one control-plane unit's data, or None while it has written nothing."""
    if not Fields(databag):
        return None
    return KubeControlProviderUnit.from_databag(databag)


def api_endpoints(unit_databags: Iterable[Mapping[str, str]]) -> list[str]:
    """Requirer side: the union of every control-plane unit's endpoint, sorted and distinct.

    Empty databags (not ready) and malformed ones are skipped, so one broken control-plane
    unit never hides the others; use :func:`read_provider_unit` to report a malformed one.
    """
    found = set()
    for databag in unit_databags:
        try:
            data = read_provider_unit(databag)
        except RelationDataError:
            continue
        if data is not None:
            found.add(data.api_endpoint)
    return sorted(found)


@dataclass(frozen=True)
class KubeControlProviderApp:
    """What the control-plane leader publishes for every worker."""

    ca_cert: str
    service_cidr: str
    dns_address: str
    dns_domain: str
    kubernetes_version: str
    image_registry: str
    certificates: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_certificate("ca-cert", self.ca_cert, ca=True)
        service_cidr = check_cidr("service-cidr", self.service_cidr)
        dns_address = check_ip("dns-address", self.dns_address)
        check_host_in("dns-address", dns_address, service_cidr)
        check_dns_subdomain("dns-domain", self.dns_domain)
        if not _VERSION.fullmatch(self.kubernetes_version):
            raise RelationDataError(
                "kubernetes-version", f"expected 1.x.y, got {self.kubernetes_version[:50]!r}"
            )
        check_image_registry("image-registry", self.image_registry)
        certificates = check_unit_map("certificates", self.certificates)
        for unit, pem in certificates.items():
            key = f"certificates[{unit[:100]}]"
            identity = check_certificate(key, pem, ca=False).identity
            if not identity.common_name.startswith(
                NODE_COMMON_NAME_PREFIX
            ) or identity.organizations != frozenset({NODE_ORGANIZATION}):
                raise RelationDataError(key, f"not a node certificate: {identity.common_name!r}")
        object.__setattr__(self, "service_cidr", service_cidr)
        object.__setattr__(self, "dns_address", dns_address)
        object.__setattr__(self, "certificates", certificates)

    def certificate_for(self, unit_name: str) -> str | None:
        """The node certificate issued to `unit_name`, if any."""
        return self.certificates.get(unit_name)

    def to_databag(self) -> dict[str, str]:
        """Encode for the control-plane application databag (leader only)."""
        return encode(
            {
                "ca-cert": self.ca_cert,
                "certificates": dict(self.certificates),
                "service-cidr": self.service_cidr,
                "dns-address": self.dns_address,
                "dns-domain": self.dns_domain,
                "kubernetes-version": self.kubernetes_version,
                "image-registry": self.image_registry,
            },
            unbounded=("certificates",),
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> KubeControlProviderApp:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag, unbounded=("certificates",))
        return cls(
            ca_cert=fields.string("ca-cert"),
            certificates=expect_str_map("certificates", fields.required("certificates")),
            service_cidr=fields.string("service-cidr"),
            dns_address=fields.string("dns-address"),
            dns_domain=fields.string("dns-domain"),
            kubernetes_version=fields.string("kubernetes-version"),
            image_registry=fields.string("image-registry"),
        )


def read_provider_app(databag: Mapping[str, str]) -> KubeControlProviderApp | None:
    """Requirer side: the control-plane leader's data, or None while it has written nothing."""
    if not Fields(databag, unbounded=("certificates",)):
        return None
    return KubeControlProviderApp.from_databag(databag)

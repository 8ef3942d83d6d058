"""Interface ``kaji-etcd``: etcd (endpoint ``db``, provider) serves control-plane (``etcd``).

Requirer unit databag (each control-plane unit)::

    client-csr   str   PEM CSR for the unit's etcd client certificate,
                       identity = expected_client_identity(unit name)

Provider application databag (etcd leader)::

    client-urls   list[str]        https client URL of every etcd member, sorted
    ca-cert       str              PEM of the etcd CA certificate (public part only)
    certificates  {unit: str}      signed client certificate PEM per requiring unit

A client certificate's identity is CN = the requiring unit's name (``control-plane/0``),
O = ``kaji:etcd-clients`` and no subject alt names; it is signed with the CLIENT profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kaji.interfaces._base import (
    Fields,
    RelationDataError,
    check_certificate,
    check_csr,
    check_unit_map,
    check_unit_name,
    check_urls,
    encode,
    expect_str_map,
)
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from kaji import pki
    from kaji.pki import Identity
else:
    pki = lazy_import("kaji.pki")  # cryptography only when an identity is built

INTERFACE = "kaji-etcd"
CLIENT_ORGANIZATION = "kaji:etcd-clients"


def expected_client_identity(unit_name: str) -> Identity:
    """The identity an etcd client CSR from `unit_name` must carry (and its certificate names).

    Raises:
        RelationDataError: `unit_name` is not a unit name.
    """
    check_unit_name("unit-name", unit_name)
    return pki.Identity.of(unit_name, organizations=[CLIENT_ORGANIZATION])


@dataclass(frozen=True)
class EtcdRequirerUnit:
    """What one requiring (control-plane) unit writes: its client CSR."""

    client_csr: str

    def __post_init__(self) -> None:
        check_csr("client-csr", self.client_csr)

    def to_databag(self) -> dict[str, str]:
        """Encode for the requiring unit's own databag."""
        return encode({"client-csr": self.client_csr})

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> EtcdRequirerUnit:
        """Decode and validate (CSR readable; identity not checked here).

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        return cls(client_csr=Fields(databag).string("client-csr"))


def read_requirer_unit(databag: Mapping[str, str], unit_name: str) -> EtcdRequirerUnit | None:
    """Provider side: read `unit_name`'s databag and insist its CSR names exactly that unit.

    Returns:
        None while the unit has written nothing yet.

    Raises:
        RelationDataError: malformed data, or a CSR for another identity.
    """
    if not Fields(databag):
        return None
    data = EtcdRequirerUnit.from_databag(databag)
    check_csr("client-csr", data.client_csr, expected_client_identity(unit_name))
    return data


@dataclass(frozen=True)
class EtcdProviderApp:
    """What the etcd leader publishes: member client URLs, the CA, a certificate per client."""

    client_urls: tuple[str, ...]
    ca_cert: str
    certificates: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "client_urls", check_urls("client-urls", self.client_urls))
        check_certificate("ca-cert", self.ca_cert, ca=True)
        certificates = check_unit_map("certificates", self.certificates)
        for unit, pem in certificates.items():
            key = f"certificates[{unit[:100]}]"
            info = check_certificate(key, pem, ca=False)
            if differences := expected_client_identity(unit).differences(info.identity):
                raise RelationDataError(key, "; ".join(differences))
        object.__setattr__(self, "certificates", certificates)

    def certificate_for(self, unit_name: str) -> str | None:
        """The client certificate issued to `unit_name`, if any."""
        return self.certificates.get(unit_name)

    def to_databag(self) -> dict[str, str]:
        """Encode for the etcd application databag (leader only)."""
        return encode(
            {
                "client-urls": list(self.client_urls),
                "ca-cert": self.ca_cert,
                "certificates": dict(self.certificates),
            },
            unbounded=("certificates",),
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> EtcdProviderApp:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag, unbounded=("certificates",))
        return cls(
            client_urls=tuple(fields.string_list("client-urls")),
            ca_cert=fields.string("ca-cert"),
            certificates=expect_str_map("certificates", fields.required("certificates")),
        )


def read_provider_app(databag: Mapping[str, str]) -> EtcdProviderApp | None:
    """Requirer side: the etcd leader's data, or None while it has written nothing."""
    if not Fields(databag, unbounded=("certificates",)):
        return None
    return EtcdProviderApp.from_databag(databag)

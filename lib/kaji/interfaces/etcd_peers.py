"""Peer relation ``etcd:cluster``: etcd membership and member certificates.

Unit databag (each etcd unit)::

    member-name  str         etcd member name: member_name_for(unit), ``etcd/0`` -> ``etcd-0``
    hostname     str         the machine's hostname (DNS-1123 subdomain)
    addresses    list[str]   the machine's IP addresses (sorted, compressed form)
    peer-url     str         https peer URL; its host is one of addresses or hostname
    client-url   str         https client URL; its host is one of addresses or hostname
    peer-csr     str         PEM CSR; identity = expected_member_identity(unit, hostname,
                             addresses)
    member-id    str         (optional) hex etcd member ID, once the unit is a voting member

A peer's addresses and the hosts of its URLs must be addresses Juju reports for that unit
(``ingress-address``/``private-address`` in the same databag): :func:`read_peer_unit` refuses
anything else, so no unit can point the cluster or its clients elsewhere.

Application databag (etcd leader)::

    ca-cert        str           PEM of the etcd CA certificate (public part only; the CA key
                                 lives in an app-owned Juju secret)
    certificates   {unit: str}   signed member certificate PEM per unit
    cluster-token  str           etcd --initial-cluster-token
    cluster-state  str           ``new`` while bootstrapping, ``existing`` once the cluster runs
    members        {name: url}   the members etcd knows (member name -> peer URL); the
                                 --initial-cluster a new member starts with
    member-ids     {name: str}   hex etcd member ID per member name (empty: etcd only recorded)
    recorded-only  bool          true when etcd is only recorded, not running (offline model)

Member identity: CN = unit name, O = ``kaji:etcd-members``, DNS SANs = hostname and
``localhost``, IP SANs = addresses and ``127.0.0.1``; signed with the PEER profile, so one
certificate serves peer traffic (both directions) and the client port.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from kaji.interfaces._base import (
    Fields,
    RelationDataError,
    check_certificate,
    check_csr,
    check_dns_subdomain,
    check_ips,
    check_unit_map,
    check_unit_name,
    check_url,
    encode,
    expect_str_map,
    juju_addresses,
    url_host,
)
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from kaji import pki
    from kaji.pki import Identity
else:
    pki = lazy_import("kaji.pki")  # cryptography only when an identity is built

RELATION = "cluster"
INTERFACE = "kaji-etcd-peers"
MEMBER_ORGANIZATION = "kaji:etcd-members"
CLUSTER_STATES = ("new", "existing")

_MEMBER_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,128}")
_MEMBER_ID = re.compile(r"[0-9a-f]{1,16}")
#: Application keys that grow with the number of units (exempt from the per-value limit).
_APP_UNBOUNDED = ("members", "certificates", "member-ids")


def member_name_for(unit_name: str) -> str:
    """The etcd member name of a unit: ``etcd/0`` -> ``etcd-0``."""
    return check_unit_name("unit-name", unit_name).replace("/", "-")


def expected_member_identity(unit_name: str, hostname: str, addresses: Iterable[str]) -> Identity:
    """The identity a member's peer CSR (and certificate) must carry.

    Raises:
        RelationDataError: a bad unit name, hostname or address.
    """
    check_unit_name("unit-name", unit_name)
    check_dns_subdomain("hostname", hostname)
    return pki.Identity.of(
        unit_name,
        organizations=[MEMBER_ORGANIZATION],
        dns_names=[hostname, "localhost"],
        ip_addresses=[*check_ips("addresses", addresses), "127.0.0.1"],
    )


def _check_member_name(key: str, value: str) -> str:
    if not _MEMBER_NAME.fullmatch(value):
        raise RelationDataError(key, f"not an etcd member name: {value[:100]!r}")
    return value


def _check_member_id(key: str, value: str) -> str:
    if not _MEMBER_ID.fullmatch(value):
        raise RelationDataError(key, f"not a hex etcd member ID: {value[:100]!r}")
    return value


@dataclass(frozen=True)
class EtcdPeerUnit:
    """What each etcd unit tells its peers."""

    member_name: str
    hostname: str
    addresses: tuple[str, ...]
    peer_url: str
    client_url: str
    peer_csr: str
    member_id: str | None = None

    def __post_init__(self) -> None:
        _check_member_name("member-name", self.member_name)
        if self.member_id is not None:
            _check_member_id("member-id", self.member_id)
        check_dns_subdomain("hostname", self.hostname)
        addresses = check_ips("addresses", self.addresses)
        hosts = {*addresses, self.hostname}
        for key, url in (("peer-url", self.peer_url), ("client-url", self.client_url)):
            url = check_url(key, url)
            if url_host(url) not in hosts:
                raise RelationDataError(key, f"host of {url} is not this unit's")
            object.__setattr__(self, key.replace("-", "_"), url)
        object.__setattr__(self, "addresses", addresses)
        check_csr("peer-csr", self.peer_csr)

    def to_databag(self) -> dict[str, str]:
        """Encode for the unit's own peer databag."""
        return encode(
            {
                "member-name": self.member_name,
                "hostname": self.hostname,
                "addresses": list(self.addresses),
                "peer-url": self.peer_url,
                "client-url": self.client_url,
                "peer-csr": self.peer_csr,
                "member-id": self.member_id,
            }
        )

    def with_member_id(self, member_id: str | None) -> EtcdPeerUnit:
        """The same data with ``member-id`` set (a hex ID) or removed (None)."""
        return replace(self, member_id=member_id)

    def check_reported_addresses(self, databag: Mapping[str, str]) -> None:
        """Insist the addresses and URL hosts are ones Juju reports for the unit.

        Juju writes the unit's ``ingress-address`` (and ``private-address``) into its databag.

        Raises:
            RelationDataError: Juju reports no address, or a claim is not one of them.
        """
        known = juju_addresses(databag)
        if not known:
            raise RelationDataError("ingress-address", "Juju reports no address for the unit")
        its = f"its address{'es' if len(known) > 1 else ''} {', '.join(sorted(known))}"
        if extra := set(self.addresses) - known:
            raise RelationDataError("addresses", f"{', '.join(sorted(extra))} is not {its}")
        for key, url in (("peer-url", self.peer_url), ("client-url", self.client_url)):
            if url_host(url) not in known:
                raise RelationDataError(key, f"{url[:200]} is not {its}")

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> EtcdPeerUnit:
        """Decode and validate (CSR readable; identity checked by :func:`read_peer_unit`).

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag)
        return cls(
            member_name=fields.string("member-name"),
            hostname=fields.string("hostname"),
            addresses=tuple(fields.string_list("addresses")),
            peer_url=fields.string("peer-url"),
            client_url=fields.string("client-url"),
            peer_csr=fields.string("peer-csr"),
            member_id=fields.optional_string("member-id"),
        )


def read_peer_unit(
    databag: Mapping[str, str], unit_name: str, *, own: bool = False
) -> EtcdPeerUnit | None:
    """Read `unit_name`'s peer databag; its member name and CSR identity must be that unit's.

    Another unit's addresses and URL hosts must also be the addresses Juju reports for it in
    the same databag (:meth:`EtcdPeerUnit.check_reported_addresses`); ``own`` skips that for
    the reading unit's own bag, whose data it made itself.

    Returns:
        None while the unit has written nothing yet.

    Raises:
        RelationDataError: malformed data, another unit's member name, a CSR for another
            identity, or an address Juju does not report for the unit.
    """
    if not Fields(databag):
        return None
    data = EtcdPeerUnit.from_databag(databag)
    if data.member_name != member_name_for(unit_name):
        raise RelationDataError("member-name", f"{data.member_name!r} is not {unit_name}'s")
    if not own:
        data.check_reported_addresses(databag)
    expected = expected_member_identity(unit_name, data.hostname, data.addresses)
    check_csr("peer-csr", data.peer_csr, expected)
    return data


def read_member_id(databag: Mapping[str, str]) -> str | None:
    """Just the ``member-id`` of a unit databag (None when absent).

    Raises:
        RelationDataError: not a hex member ID.
    """
    value = Fields(databag).optional_string("member-id")
    return None if value is None else _check_member_id("member-id", value)


@dataclass(frozen=True)
class EtcdPeerApp:
    """What the etcd leader tells every member."""

    ca_cert: str
    cluster_token: str
    cluster_state: str
    members: Mapping[str, str] = field(default_factory=dict)
    certificates: Mapping[str, str] = field(default_factory=dict)
    member_ids: Mapping[str, str] = field(default_factory=dict)
    recorded_only: bool = False

    def __post_init__(self) -> None:
        check_certificate("ca-cert", self.ca_cert, ca=True)
        if not _TOKEN.fullmatch(self.cluster_token):
            raise RelationDataError("cluster-token", "expected 1-128 of [A-Za-z0-9._-]")
        if self.cluster_state not in CLUSTER_STATES:
            raise RelationDataError("cluster-state", f"expected one of {CLUSTER_STATES}")
        members = {
            _check_member_name(f"members[{name[:100]}]", name): check_url(
                f"members[{name[:100]}]", url
            )
            for name, url in sorted(self.members.items())
        }
        certificates = check_unit_map("certificates", self.certificates)
        for unit, pem in certificates.items():
            key = f"certificates[{unit[:100]}]"
            identity = check_certificate(key, pem, ca=False).identity
            if identity.common_name != unit or identity.organizations != {MEMBER_ORGANIZATION}:
                raise RelationDataError(key, f"not {unit}'s member certificate")
        member_ids = {
            _check_member_name(f"member-ids[{name[:100]}]", name): _check_member_id(
                f"member-ids[{name[:100]}]", value
            )
            for name, value in sorted(self.member_ids.items())
        }
        if not isinstance(self.recorded_only, bool):
            raise RelationDataError("recorded-only", "expected true or false")
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "certificates", certificates)
        object.__setattr__(self, "member_ids", member_ids)

    def certificate_for(self, unit_name: str) -> str | None:
        """The member certificate issued to `unit_name`, if any."""
        return self.certificates.get(unit_name)

    def to_databag(self) -> dict[str, str]:
        """Encode for the etcd application peer databag (leader only)."""
        return encode(
            {
                "ca-cert": self.ca_cert,
                "cluster-token": self.cluster_token,
                "cluster-state": self.cluster_state,
                "members": dict(self.members),
                "certificates": dict(self.certificates),
                "member-ids": dict(self.member_ids),
                "recorded-only": self.recorded_only,
            },
            unbounded=_APP_UNBOUNDED,
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> EtcdPeerApp:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag, unbounded=_APP_UNBOUNDED)
        ids = fields.optional("member-ids")
        recorded = fields.optional("recorded-only")
        if recorded is not None and not isinstance(recorded, bool):
            raise RelationDataError("recorded-only", f"expected a boolean, got {recorded!r:.50}")
        return cls(
            ca_cert=fields.string("ca-cert"),
            cluster_token=fields.string("cluster-token"),
            cluster_state=fields.string("cluster-state"),
            members=expect_str_map("members", fields.required("members")),
            certificates=expect_str_map("certificates", fields.required("certificates")),
            member_ids={} if ids is None else expect_str_map("member-ids", ids),
            recorded_only=bool(recorded),
        )


def read_peer_app(databag: Mapping[str, str]) -> EtcdPeerApp | None:
    """The etcd leader's peer data, or None while it has written nothing."""
    if not Fields(databag, unbounded=_APP_UNBOUNDED):
        return None
    return EtcdPeerApp.from_databag(databag)

"""The etcd charm's relations, through kaji.interfaces: ``cluster`` (peers) and ``db``.

Every read is typed and validated; malformed data is refused by name (logged and noted for the
status) and never used. Private keys never cross a relation: members and clients send CSRs, the
leader sends certificates and the CA certificate; the CA key lives in an app-owned secret.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING

import ops

from kaji.app_secrets import app_secret_content
from kaji.interfaces import Refusal, RelationDataError, read_or_refuse, update_databag
from kaji.lazy import lazy_import
from kaji_etcd.literals import CA_SECRET_LABEL, MEMBER_KEY_NAME, PKI_DIR

if TYPE_CHECKING:
    from kaji import certs, pki
    from kaji.certs import KeyAndRequest
    from kaji.interfaces import etcd, etcd_peers
    from kaji.interfaces.etcd_peers import EtcdPeerApp, EtcdPeerUnit
    from kaji_etcd import membership
    from kaji_etcd.member import Member
    from kaji_etcd.status import Notes
else:  # a settled, recorded-only unit's update-status needs none of them (docs/performance.md)
    certs = lazy_import("kaji.certs")
    pki = lazy_import("kaji.pki")
    etcd = lazy_import("kaji.interfaces.etcd")
    etcd_peers = lazy_import("kaji.interfaces.etcd_peers")
    membership = lazy_import("kaji_etcd.membership")

__all__ = ["Peers", "cluster_ca", "dns_hostname", "peer_unit_names", "serve_clients"]

logger = logging.getLogger(__name__)


def dns_hostname(raw: str) -> str:
    """A machine's hostname as a DNS-1123 name."""
    name = re.sub(r"[^a-z0-9.-]", "-", raw.strip().lower()).strip("-.")
    return name or "localhost"


def peer_unit_names(unit: ops.Unit, relation: ops.Relation | None) -> set[str]:
    """This unit and the other units of the peer relation."""
    names = {unit.name}
    if relation is not None:
        names |= {u.name for u in relation.units}
    return names


def cluster_ca(charm: ops.CharmBase) -> pki.CertificateAuthority | None:
    """The etcd CA (app-owned secret ``etcd-ca``): the first leader makes it, others reuse it."""

    def make() -> dict[str, str]:
        ca = pki.create_ca(f"kaji etcd CA ({charm.app.name})")
        return {"cert": ca.cert_pem, "key": ca.key_pem}

    content = app_secret_content(charm, CA_SECRET_LABEL, make)
    if not content:
        return None
    return pki.CertificateAuthority(cert_pem=content["cert"], key_pem=content["key"])


class Peers:
    """This dispatch's view of the peer relation: every bag read (and validated) once.

    Refusals go to ``notes``. ``own`` is this unit's data as published in this dispatch.
    """

    def __init__(self, charm: ops.CharmBase, relation: ops.Relation, notes: Notes) -> None:
        self.unit, self.app, self.relation, self.notes = charm.unit, charm.app, relation, notes
        self.own: EtcdPeerUnit | None = None
        self._remote: dict[str, EtcdPeerUnit] | None = None
        self._app_read: tuple[EtcdPeerApp | None] | None = None
        self._signed: tuple[dict[str, EtcdPeerUnit], dict[str, str]] | None = None

    # -- this unit's data ----------------------------------------------------------------------

    def publish_unit(self, member: Member, hostname: str) -> KeyAndRequest:
        """Make this member's key and CSR (the key stays here) and publish its peer data."""
        identity = etcd_peers.expected_member_identity(self.unit.name, hostname, [member.address])
        request = certs.ensure_key_and_csr(member.host, PKI_DIR, MEMBER_KEY_NAME, identity)
        self.own = etcd_peers.EtcdPeerUnit(
            member_name=member.name,
            hostname=hostname,
            addresses=(member.address,),
            peer_url=member.peer_url,
            client_url=member.client_url,
            peer_csr=request.csr_pem,
            member_id=self._published_member_id(),
        )
        update_databag(self.relation.data[self.unit], self.own.to_databag())
        return request

    def publish_member_id(self, member_id: str | None) -> None:
        """Say (hex ID) or stop saying (None) that this unit is a voting member."""
        assert self.own is not None
        self.own = self.own.with_member_id(member_id)
        update_databag(self.relation.data[self.unit], self.own.to_databag())

    @property
    def own_member_id(self) -> str | None:
        """This unit's member ID as published (a voting member), else None."""
        return self.own.member_id if self.own else self._published_member_id()

    def _published_member_id(self) -> str | None:
        """This unit's published member-id; a malformed one is dropped (it is rewritten)."""
        try:
            return etcd_peers.read_member_id(self.relation.data[self.unit])
        except RelationDataError as error:
            logger.warning("dropping this unit's malformed member-id: %s", error)
            return None

    # -- the other units and the leader ----------------------------------------------------------

    def remote(self) -> dict[str, EtcdPeerUnit]:
        """The other units' valid peer data; refusals logged and noted.

        Valid: the typed contract holds, the CSR names the unit, and its addresses and URL
        hosts are the addresses Juju reports for it (``ingress-address`` in its databag).
        """
        if self._remote is None:
            self._remote = {}
            for unit in sorted(self.relation.units, key=lambda u: u.name):
                name = unit.name
                data = read_or_refuse(
                    functools.partial(etcd_peers.read_peer_unit, unit_name=name),
                    self.relation.data[unit],
                    sender=name,
                    what="peer data",
                    log=logger,
                )
                if isinstance(data, Refusal):
                    self.notes.refuse(name, "peer data", data)
                elif data is not None:
                    self._remote[name] = data
        return self._remote

    def units(self) -> dict[str, EtcdPeerUnit]:
        """Every peer unit's valid data, this unit's own (as just published) included."""
        found = dict(self.remote())
        if self.own is not None:
            found[self.unit.name] = self.own
        return dict(sorted(found.items()))

    def present_members(self) -> set[str]:
        """The member names of this unit and the units still in the relation."""
        return {etcd_peers.member_name_for(u) for u in peer_unit_names(self.unit, self.relation)}

    def app_data(self) -> EtcdPeerApp | None:
        """The leader's peer application data (None: none or malformed)."""
        if self._app_read is None:
            data = read_or_refuse(
                etcd_peers.read_peer_app,
                self.relation.data[self.app],
                sender=f"the {self.app.name} leader",
                what="peer application data",
                log=logger,
            )
            if not isinstance(data, Refusal):
                self._app_read = (data,)
            else:
                if self.unit.is_leader():  # its own earlier data: the leader rewrites it
                    self.notes.add(f"replacing malformed peer application data: {data.key}")
                else:
                    self.notes.refuse(data.sender, data.what, data)
                self._app_read = (None,)
        return self._app_read[0]

    def member_certificate(self, request: KeyAndRequest) -> str | None:
        """This unit's member certificate from the leader when it fits this unit's key and CSR."""
        app = self.app_data()
        cert = app.certificate_for(self.unit.name) if app else None
        if app is None or cert is None:
            return None
        if not certs.usable_certificate(cert, request, app.ca_cert, pki.Profile.PEER):
            return None
        return cert

    def client_urls(self, member: Member) -> list[str]:
        """Where to reach the cluster (see :func:`kaji_etcd.membership.member_client_urls`)."""
        voting = (d.client_url for d in self.remote().values() if d.member_id)
        return membership.member_client_urls(
            member, self.app_data(), voting, bool(self.own_member_id)
        )

    def endpoints(self, member: Member) -> list[str]:
        """Where to ask the cluster: the members' client URLs, or this member's own."""
        return self.client_urls(member) or [member.client_url]

    def member_count(self) -> int:
        """How many members the leader publishes (none yet: 0)."""
        app = self.app_data()
        return len(app.members) if app else 0

    def recorded_client_urls(self) -> list[str]:
        """Client URLs of the members the leader publishes, from validated peer data only."""
        app = self.app_data()
        if app is None:
            return []
        # Only validated peer data: a refused peer's URL is never published.
        by_name = {d.member_name: d.client_url for d in self.units().values()}
        return sorted(by_name[n] for n in app.members if n in by_name)

    # -- the leader's part -------------------------------------------------------------------

    def member_certificates(
        self, ca: pki.CertificateAuthority
    ) -> tuple[dict[str, EtcdPeerUnit], dict[str, str]]:
        """Every valid peer and its member certificate (kept, or signed now); once a dispatch.

        A CSR that does not carry its unit's identity is refused by name.
        """
        if self._signed is None:
            current = self.app_data()
            peers = self.units()
            certificates: dict[str, str] = {}
            for unit, data in peers.items():
                expected = etcd_peers.expected_member_identity(unit, data.hostname, data.addresses)
                existing = current.certificate_for(unit) if current else None
                try:
                    certificates[unit] = certs.issue(
                        data.peer_csr, expected, ca, pki.Profile.PEER, existing
                    )
                except pki.PKIError as error:
                    self.notes.refuse(unit, "member certificate request", error)
            self._signed = (peers, certificates)
        return self._signed

    def publish_cluster(self, ca: pki.CertificateAuthority, member: Member) -> str | None:
        """The leader: sign member certificates, manage membership, publish the cluster.

        Returns why a departed member stays a member (its removal would lose quorum), if so.
        """
        current = self.app_data()
        units, certificates = self.member_certificates(ca)
        token = current.cluster_token if current else membership.cluster_token(member)
        present, endpoints = self.present_members(), self.client_urls(member)
        plan = membership.leader_membership(
            member, current, units, certificates, present, endpoints
        )
        self.publish_app(ca, token, plan, certificates, recorded_only=not member.binaries.live)
        return plan.blocked

    def publish_app(
        self,
        ca: pki.CertificateAuthority,
        token: str,
        plan: membership.Membership,
        certificates: dict[str, str],
        *,
        recorded_only: bool,
    ) -> None:
        """Publish the cluster: CA certificate, token, membership, member certificates."""
        try:
            app = etcd_peers.EtcdPeerApp(
                ca_cert=ca.cert_pem,
                cluster_token=token,
                cluster_state=plan.state,
                members=plan.members,
                certificates=certificates,
                member_ids=plan.ids,
                recorded_only=recorded_only,
            )
        except RelationDataError as error:  # e.g. a member etcd lists with an odd URL
            logger.error("not publishing the peer application data: %s", error)
            self.notes.add(f"cannot publish the membership: {error.key} {error.reason}")
            return
        self.replace_app(app)

    def replace_app(self, app: EtcdPeerApp) -> None:
        """Write the peer application data (leader) and read it afresh next time."""
        update_databag(self.relation.data[self.app], app.to_databag())
        self._app_read = None


def serve_clients(
    relations: list[ops.Relation],
    app: ops.Application,
    ca: pki.CertificateAuthority,
    urls: list[str],
    notes: Notes,
) -> None:
    """Publish the client URLs, the CA and one client certificate per requiring unit (leader).

    A request whose CN is not its unit's is refused by name.
    """
    for db in relations:
        bag = db.data[app]
        try:
            current = etcd.read_provider_app(bag)
        except RelationDataError:
            current = None
        issued: dict[str, str] = {}
        for unit in sorted(db.units, key=lambda u: u.name):
            name = unit.name
            request = read_or_refuse(
                functools.partial(etcd.read_requirer_unit, unit_name=name),
                db.data[unit],
                sender=name,
                what="client certificate request",
                log=logger,
            )
            if isinstance(request, Refusal):
                notes.refuse(name, "client certificate request", request)
                continue
            if request is None:
                continue
            try:
                issued[name] = certs.issue(
                    request.client_csr,
                    etcd.expected_client_identity(name),
                    ca,
                    pki.Profile.CLIENT,
                    current.certificate_for(name) if current else None,
                )
            except (RelationDataError, pki.PKIError) as error:
                notes.refuse(name, "client certificate request", error)
        try:
            data = etcd.EtcdProviderApp(
                client_urls=tuple(urls), ca_cert=ca.cert_pem, certificates=issued
            )
        except RelationDataError as error:  # e.g. a member etcd lists with an odd URL
            logger.error("not publishing to the clients: %s", error)
            notes.add(f"cannot publish to the clients: {error.key} {error.reason}")
            return
        update_databag(bag, data.to_databag())

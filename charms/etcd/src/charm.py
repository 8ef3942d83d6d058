#!/usr/bin/env python3
"""Charm entry point for kaji-etcd: a TLS etcd cluster that follows the application's units.

The leader owns the etcd CA (an app-owned secret), signs every member's CSR and every client's
CSR, and drives membership: the first unit bootstraps, later units are added as learners (one
at a time) and promote themselves once caught up, departed units are removed unless that
would lose quorum. The workload itself lives in ``etcd_workload``.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ops

from kaji.host import HostError
from kaji.interfaces import RelationDataError, update_databag
from kaji.operator import ReconcileRecord, ReconcilingCharm, app_secret_content, lazy_import

if TYPE_CHECKING:
    import etcd_workload as workload

    from kaji import pki
    from kaji.certs import KeyAndRequest
    from kaji.host import Host
    from kaji.interfaces import etcd_peers
    from kaji.interfaces.etcd_peers import EtcdPeerApp, EtcdPeerUnit
else:  # a settled, recorded-only unit's update-status needs neither (docs/performance.md)
    workload = lazy_import("etcd_workload")
    etcd_peers = lazy_import("kaji.interfaces.etcd_peers")

logger = logging.getLogger(__name__)

PEER = "cluster"
DB = "db"
CA_SECRET_LABEL = "etcd-ca"  # noqa: S105 - a label, not a secret
#: In etcd_workload.DATA_ROOT (spelled out: the module loads lazily).
DEPARTED_MARKER = "/var/lib/kaji/etcd/departed"
#: Written once this unit knows it is being removed (it departs, or stop/remove runs): from
#: then on it only leaves, and never writes application data, even while still leader.
LEAVING_MARKER = "/var/lib/kaji/etcd/leaving"
RECONCILED_FILE = "/var/lib/kaji/etcd/reconciled.json"
#: A full reconcile runs at least this often even when nothing changed (certificate renewal).
FULL_RECONCILE_INTERVAL = 6 * 3600
#: ``juju status`` names the member certificate's expiry when it is closer than this.
EXPIRY_WARNING_DAYS = 30
RECORDED_NOTE = "etcd not running on this machine: recorded only"
#: How long a new learner waits (in its own hook) to catch up and promote itself.
PROMOTE_WAIT = 30.0
#: At most this many notes (refused or ignored data) are spelled out in the status.
MAX_NOTES = 2


@dataclass
class ClusterView:
    """What etcd says about the cluster right now (live mode), or the recorded membership."""

    live: bool
    members: list[workload.MemberInfo] = field(default_factory=list)
    healthy: set[int] = field(default_factory=set)
    leader_id: int | None = None
    error: str | None = None

    def voters(self) -> list[workload.MemberInfo]:
        """The voting members."""
        return [m for m in self.members if not m.is_learner]

    def healthy_client_urls(self) -> list[str]:
        """Client URLs of the healthy voting members."""
        return sorted(m.client_urls[0] for m in self.voters() if m.id in self.healthy)


def members_text(count: int) -> str:
    """``1 member``, ``3 members``."""
    return f"{count} member{'' if count == 1 else 's'}"


def unit_of_member(member_name: str) -> str:
    """``etcd-0`` -> ``etcd/0`` (the app name may itself hold hyphens)."""
    app, _, number = member_name.rpartition("-")
    return f"{app}/{number}"


def dns_hostname(raw: str) -> str:
    """A machine's hostname as a DNS-1123 name."""
    name = re.sub(r"[^a-z0-9.-]", "-", raw.strip().lower()).strip("-.")
    return name or "localhost"


class EtcdCharm(ReconcilingCharm):
    """kaji-etcd: one etcd member per unit, one TLS cluster per application."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        for endpoint in self.meta.relations:
            framework.observe(self.on[endpoint].relation_departed, self._on_departed)
        framework.observe(self.on.stop, self._on_stop)
        framework.observe(self.on.remove, self._on_remove)
        framework.observe(self.on.snapshot_action, self._on_snapshot_action)
        framework.observe(self.on.restore_action, self._on_restore_action)
        framework.observe(self.on.health_action, self._on_health_action)
        framework.observe(self.on.member_list_action, self._on_member_list_action)
        framework.observe(self.on.defrag_action, self._on_defrag_action)
        self._status: ops.StatusBase | None = None
        self._notes: list[str] = []
        self._host: Host | None = None
        self._view: ClusterView | None = None
        self._signed: tuple[dict[str, EtcdPeerUnit], dict[str, str]] | None = None
        self._own: EtcdPeerUnit | None = None
        self._remote: dict[str, EtcdPeerUnit] | None = None
        self._app_read: tuple[EtcdPeerApp | None] | None = None
        self.remember_reconciles(self.host, RECONCILED_FILE, max_age=FULL_RECONCILE_INTERVAL)

    # -- events ------------------------------------------------------------------------------

    def reconcile_events(self) -> list[ops.BoundEvent]:
        """Every base event except relation-departed, which first looks at who departs."""
        return [
            e for e in super().reconcile_events() if not e.event_kind.endswith("relation_departed")
        ]

    def _on_departed(self, event: ops.RelationDepartedEvent) -> None:
        """A remote unit left; or, when this unit is the departing one, this unit is going.

        Juju names this unit as the departing one only when it (or its application) is no
        longer alive, and keeps it leader until it is gone, while every departed hook shrinks
        its view of the remote units (juju/juju worker/uniter/relation/resolver.go,
        worker/uniter/leadership/resolver.go). From then on it must not rewrite any
        application data from that view.
        """
        if event.departing_unit == self.unit:
            self._mark_leaving()
        self.reconcile()

    def _on_stop(self, _: ops.EventBase) -> None:
        """The stop hook runs only when the unit is being removed."""
        self._mark_leaving()
        if self.model.get_relation(PEER) is not None and len(self._peer_unit_names()) > 1:
            self._leave()
        else:
            self.host.services.stop(workload.SERVICE)
            self._status = ops.MaintenanceStatus("stopped")

    def _on_remove(self, _: ops.EventBase) -> None:
        self._mark_leaving()
        self._status = ops.MaintenanceStatus("removing this unit")

    def _mark_leaving(self) -> None:
        if not self._leaving():
            logger.info("this unit is being removed: it only leaves from now on")
            self.host.ensure_directory(posixpath.dirname(LEAVING_MARKER), 0o700)
            self.host.write_file(LEAVING_MARKER, f"{self.unit.name}\n", mode=0o600)

    def _leaving(self) -> bool:
        """Whether this unit (not an earlier one of this machine or storage) is being removed."""
        return self.host.read_text(LEAVING_MARKER) == f"{self.unit.name}\n"

    # -- shared state -----------------------------------------------------------------------

    @property
    def host(self) -> Host:
        """This machine; in a sandbox without etcd on PATH, etcd is only recorded."""
        if self._host is None:
            from kaji.host import RecordingManager, host_from_environment

            host = host_from_environment()
            if host.is_sandbox and host.services.runs_processes and not _etcd_on_path():
                host.services = RecordingManager(host.path("/var/lib/kaji/services"))
            self._host = host
        return self._host

    def _address(self, kind: str = "ingress") -> str | None:
        """This unit's ingress address (what others reach it at) or its bind address."""
        binding = self.model.get_binding(PEER)
        if binding is None:
            return None
        try:
            network = binding.network
            address = network.ingress_address if kind == "ingress" else network.bind_address
        except (ops.ModelError, RuntimeError):
            return None
        return None if address is None else str(address)

    def _resource(self) -> str | None:
        if self.host.is_sandbox:
            return None
        try:
            path = self.model.resources.fetch("etcd")
        except (ops.ModelError, NameError):
            return None
        return str(path) if path.stat().st_size > 0 else None

    def _member(self, *, install: bool = True) -> workload.Member:
        """This unit's member (raises ConfigError, EtcdError, HostError, _NotReadyError).

        ``install=False`` (actions, leaving, the cheap update-status) installs nothing: it
        uses the binaries already on the machine.
        """
        config = workload.parse_config(dict(self.config))
        address = self._address()
        if address is None:
            raise _NotReadyError(ops.WaitingStatus("waiting for the unit's network address"))
        if install:
            binaries = workload.ensure_binaries(self.host, config, self._resource())
        else:
            binaries = workload.find_binaries(self.host)
        extra = ("127.0.0.1",) if not self.host.is_sandbox and address != "127.0.0.1" else ()
        return workload.Member(
            self.host,
            config,
            binaries,
            etcd_peers.member_name_for(self.unit.name),
            address,
            extra,
            listen_address=self._address("bind") or address,
        )

    def _peer_unit_names(self) -> set[str]:
        relation = self.model.get_relation(PEER)
        names = {self.unit.name}
        if relation is not None:
            names |= {u.name for u in relation.units}
        return names

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Validate config, install, exchange certificates, manage membership, serve clients."""
        self._status, self._notes, self._view, self._signed = None, [], None, None
        self._own, self._remote, self._app_read = None, None, None
        if self._leaving():
            self._leave()  # retried until it succeeds; never writes application data
            return
        try:
            workload.parse_config(dict(self.config))
        except workload.ConfigError as error:
            logger.error("invalid config: %s", error)
            self._status = ops.BlockedStatus(f"invalid config: {error.option}: {error.reason}")
            return
        if self.host.exists(DEPARTED_MARKER):
            self._status = ops.MaintenanceStatus("this unit left the cluster; etcd is stopped")
            return
        try:
            member = self._member()
        except _NotReadyError as wait:
            self._status = wait.status
            return
        except (workload.EtcdError, HostError, OSError) as error:
            logger.error("cannot install etcd: %s", error)
            self._status = ops.BlockedStatus(f"cannot install etcd: {error}"[:200])
            return
        relation = self.model.get_relation(PEER)
        if relation is None:
            self._status = ops.WaitingStatus("waiting for the peer relation")
            return
        request = self._publish_unit(member, relation)
        if self.unit.is_leader():
            self._lead(member, relation)
        try:
            self._run_member(member, relation, request)
        except (workload.EtcdError, HostError) as error:
            logger.error("etcd on this unit: %s", error)
            self._status = ops.WaitingStatus(f"etcd failed: {error}"[:200])
        if self.unit.is_leader():
            self._lead(member, relation)  # membership as etcd now sees it
            self._serve_clients(member, relation)
        self._settle(member, relation)
        expiry = _member_cert_expiry(self.host)
        if expiry is not None:
            self._notes.append(expiry)
        self._status = self._status or self._cluster_status(member, relation)
        if self._notes and self._status.name != "active":  # active statuses carry them
            self._status = ops.StatusBase.from_name(
                self._status.name, f"{self._status.message}{self._notes_text()}"
            )
        self.record_reconciled(self._status, facts=self._facts(member, relation))

    def _facts(self, member: workload.Member, relation: ops.Relation) -> dict[str, Any]:
        """What the cheap update-status needs from this reconcile (no relation reads then)."""
        if not member.binaries.live:
            return {"service": workload.SERVICE, "live": False}
        app = self._app_data(relation)
        return {
            "service": workload.SERVICE,
            "live": True,
            "endpoints": self._member_client_urls(member, relation) or [member.client_url],
            "members": sorted(app.members) if app else [],
        }

    def _publish_unit(self, member: workload.Member, relation: ops.Relation) -> KeyAndRequest:
        from kaji import certs
        from kaji.interfaces.etcd_peers import EtcdPeerUnit, expected_member_identity

        hostname = dns_hostname(self.host.hostname)
        identity = expected_member_identity(self.unit.name, hostname, [member.address])
        request = certs.ensure_key_and_csr(
            self.host, workload.PKI_DIR, workload.MEMBER_KEY_NAME, identity
        )
        bag = relation.data[self.unit]
        self._own = EtcdPeerUnit(
            member_name=member.name,
            hostname=hostname,
            addresses=(member.address,),
            peer_url=member.peer_url,
            client_url=member.client_url,
            peer_csr=request.csr_pem,
            member_id=_own_member_id(bag),
        )
        update_databag(bag, self._own.to_databag())
        return request

    def _publish_member_id(self, relation: ops.Relation, member_id: str | None) -> None:
        """Say (hex ID) or stop saying (None) that this unit is a voting member."""
        assert self._own is not None
        self._own = self._own.with_member_id(member_id)
        update_databag(relation.data[self.unit], self._own.to_databag())

    # -- leader: CA, member certificates, membership --------------------------------------------

    def _ca(self) -> pki.CertificateAuthority | None:
        from kaji import pki

        def make() -> dict[str, str]:
            ca = pki.create_ca(f"kaji etcd CA ({self.app.name})")
            return {"cert": ca.cert_pem, "key": ca.key_pem}

        content = app_secret_content(self, CA_SECRET_LABEL, make)
        if not content:
            return None
        return pki.CertificateAuthority(cert_pem=content["cert"], key_pem=content["key"])

    def _remote_peers(self, relation: ops.Relation) -> dict[str, EtcdPeerUnit]:
        """The other units' valid peer data, read once per hook; refusals logged and noted.

        Valid: the typed contract holds, the CSR names the unit, and its addresses and URL
        hosts are the addresses Juju reports for it (``ingress-address`` in its databag).
        """
        if self._remote is None:
            from kaji.interfaces.etcd_peers import read_peer_unit

            self._remote = {}
            for unit in sorted(relation.units, key=lambda u: u.name):
                try:
                    data = read_peer_unit(relation.data[unit], unit.name)
                except RelationDataError as error:
                    self._refuse(unit.name, "peer data", error)
                    continue
                if data is not None:
                    self._remote[unit.name] = data
        return self._remote

    def _peer_units(self, relation: ops.Relation) -> dict[str, EtcdPeerUnit]:
        """Every peer unit's valid data, this unit's own (as just published) included."""
        found = dict(self._remote_peers(relation))
        if self._own is not None:
            found[self.unit.name] = self._own
        return dict(sorted(found.items()))

    def _refuse(self, sender: str, what: str, error: Exception) -> None:
        """Log and note (for the status) that ``sender``'s ``what`` is ignored, and why."""
        if isinstance(error, RelationDataError):
            reason = f"{error.key} {error.reason}"
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        note = f"refusing {sender}'s {what}: {reason}"
        logger.warning("%s", note)
        self._notes.append(note if len(note) <= 160 else f"{note[:157]}...")

    def _notes_text(self) -> str:
        """``; note; note; and N more (see debug-log)``, or empty."""
        notes = list(dict.fromkeys(self._notes))
        if not notes:
            return ""
        shown, more = notes[:MAX_NOTES], len(notes) - MAX_NOTES
        tail = [f"and {more} more (see debug-log)"] if more > 0 else []
        return "; " + "; ".join([*shown, *tail])

    def _app_data(self, relation: ops.Relation) -> EtcdPeerApp | None:
        """The leader's peer application data, read once per hook (None: none or malformed)."""
        if self._app_read is None:
            from kaji.interfaces.etcd_peers import read_peer_app

            try:
                self._app_read = (read_peer_app(relation.data[self.app]),)
            except RelationDataError as error:
                if self.unit.is_leader():  # its own earlier data: _lead rewrites it
                    note = f"replacing malformed peer application data: {error.key}"
                    logger.warning("%s (%s)", note, error)
                    self._notes.append(note)
                else:
                    self._refuse(f"the {self.app.name} leader", "peer application data", error)
                self._app_read = (None,)
        return self._app_read[0]

    def _forget_app_data(self) -> None:
        self._app_read = None

    def _lead(self, member: workload.Member, relation: ops.Relation) -> None:
        from kaji import certs, pki
        from kaji.interfaces.etcd_peers import EtcdPeerApp, expected_member_identity

        ca = self._ca()
        if ca is None:
            return
        current = self._app_data(relation)
        if self._signed is None:  # once per hook: the second pass only updates membership
            peers = self._peer_units(relation)
            certificates: dict[str, str] = {}
            for unit, data in peers.items():
                expected = expected_member_identity(unit, data.hostname, data.addresses)
                existing = current.certificate_for(unit) if current else None
                try:
                    certificates[unit] = certs.issue(
                        data.peer_csr, expected, ca, pki.Profile.PEER, existing
                    )
                except pki.PKIError as error:
                    self._refuse(unit, "member certificate request", error)
            self._signed = (peers, certificates)
        peers, certificates = self._signed
        token = current.cluster_token if current else _cluster_token(member)
        members, state, ids = self._membership(member, relation, current, peers, certificates)
        try:
            app = EtcdPeerApp(
                ca_cert=ca.cert_pem,
                cluster_token=token,
                cluster_state=state,
                members=members,
                certificates=certificates,
                member_ids=ids,
                recorded_only=not member.binaries.live,
            )
        except RelationDataError as error:  # e.g. a member etcd lists with an odd URL
            logger.error("not publishing the peer application data: %s", error)
            self._notes.append(f"cannot publish the membership: {error.key} {error.reason}")
            return
        update_databag(relation.data[self.app], app.to_databag())
        self._forget_app_data()

    def _membership(
        self,
        member: workload.Member,
        relation: ops.Relation,
        current: EtcdPeerApp | None,
        peers: dict[str, EtcdPeerUnit],
        certificates: dict[str, str],
    ) -> tuple[dict[str, str], str, dict[str, str]]:
        """The members map, cluster state and member IDs to publish; changes etcd if live."""
        if not current or not current.members:
            return {member.name: member.peer_url}, "new", {}
        old_ids = dict(current.member_ids)
        present = {etcd_peers.member_name_for(u) for u in self._peer_unit_names()}
        if not member.binaries.live:
            members = {n: u for n, u in current.members.items() if n in present}
            for unit, data in peers.items():
                if unit in certificates:
                    members[data.member_name] = data.peer_url
            started = member.is_running() or current.cluster_state == "existing"
            return members, "existing" if started else "new", {}
        endpoints = self._member_client_urls(member, relation)
        try:
            listed = self._change_membership(member, endpoints, peers, certificates, present)
        except workload.EtcdError as error:
            logger.warning("cannot reach etcd to manage membership: %s", error)
            return dict(current.members), current.cluster_state, old_ids
        by_url = {d.peer_url: d.member_name for d in peers.values()}
        members, ids = {}, {}
        for info in listed:
            name = info.name or next((by_url[u] for u in info.peer_urls if u in by_url), "")
            if name and info.peer_urls:
                members[name] = info.peer_urls[0]
                ids[name] = info.hex_id
        return members, "existing", ids

    def _change_membership(
        self,
        member: workload.Member,
        endpoints: list[str],
        peers: dict[str, EtcdPeerUnit],
        certificates: dict[str, str],
        present: set[str],
    ) -> list[workload.MemberInfo]:
        """Remove departed members, promote started learners, add the next unit as a learner."""
        listed = member.member_list(endpoints)
        urls_present = {d.peer_url for d in peers.values()}
        for info in listed:
            if info.name:
                gone = info.name not in present
            else:
                gone = not set(info.peer_urls) & urls_present
            if not gone:
                continue
            blocker = member.remove_safely(info.id, endpoints)
            if blocker:
                message = f"{info.name or info.hex_id} departed but stays a member: {blocker}"
                logger.error("%s; recover the unhealthy members, then it will be removed", message)
                self._status = ops.BlockedStatus(message)
            else:
                logger.info("removed departed member %s (%s)", info.name, info.hex_id)
        listed = member.member_list(endpoints)
        for info in listed:
            if info.is_learner and info.started:
                try:
                    member.promote(info.id, endpoints)
                except workload.EtcdError as error:
                    logger.info("learner %s not promoted yet: %s", info.name, error)
        listed = member.member_list(endpoints)
        if any(m.is_learner or not m.started for m in listed):
            return listed  # one join at a time
        known = {u for m in listed for u in m.peer_urls}
        for unit in sorted(certificates, key=_unit_number):
            data = peers[unit]
            if data.peer_url not in known and data.member_name != member.name:
                logger.info("adding %s as a learner", data.member_name)
                return member.add_learner(data.member_name, data.peer_url, endpoints)
        return listed

    # -- this unit's member --------------------------------------------------------------------

    def _run_member(
        self, member: workload.Member, relation: ops.Relation, request: KeyAndRequest
    ) -> None:
        from kaji import certs, pki

        app = self._app_data(relation)
        if app is None:
            self._status = ops.WaitingStatus("waiting for the leader to create the cluster CA")
            return
        cert = app.certificate_for(self.unit.name)
        if not certs.usable_certificate(cert, request, app.ca_cert, pki.Profile.PEER):
            self._status = ops.WaitingStatus("waiting for a member certificate from the leader")
            return
        assert cert is not None
        member.install_certificates(app.ca_cert, cert)
        record = member.join_record()
        ids = app.member_ids
        retire = None
        if record is not None and record.token != app.cluster_token:
            retire = "cluster-restored"
        elif record is not None and app.cluster_state == "existing":
            if member.name not in app.members:
                retire = "member-removed"
            elif record.member_id and ids.get(member.name) not in (None, record.member_id):
                retire = "member-replaced"
        if record is not None and retire is not None:
            where = member.retire_data(retire)
            logger.warning("this member's data is stale (%s); kept in %s", retire, where)
            self._publish_member_id(relation, None)
            record = None
        if record is None:
            if member.name not in app.members:
                count = len(app.members)
                self._status = ops.WaitingStatus(
                    f"waiting to be added to the cluster ({members_text(count)})"
                )
                return
            if app.cluster_state == "new" and set(app.members) == {member.name}:
                record = member.bootstrap(app.cluster_token)
            else:
                record = member.start_joining(app.cluster_token, app.members)
        else:
            member.ensure_running(record)
        if not member.binaries.live:
            return
        if record.member_id is None and ids.get(member.name):
            member.write_join_record(workload.with_member_id(record, ids[member.name]))
        assert self._own is not None
        if self._own.member_id is None:
            endpoints = self._member_client_urls(member, relation) or [member.client_url]
            if member.promote_self(endpoints, wait=PROMOTE_WAIT):
                own = member.own_id()
                if own is not None:
                    self._publish_member_id(relation, f"{own:x}")
            else:
                self._status = ops.WaitingStatus("learner: catching up before promotion")

    def _settle(self, member: workload.Member, relation: ops.Relation) -> None:
        """Once this member has joined, render its initial-* settings canonically (no restart).

        Joined: the cluster is ``existing``, the leader lists this member, the record belongs
        to the current cluster and -- when etcd runs -- this unit is a voting member (its
        ``member-id`` is published) whose WAL exists (checked by ``Member.settle``).
        """
        app = self._app_data(relation)
        record = member.join_record()
        if app is None or record is None or record.token != app.cluster_token:
            return
        if app.cluster_state != "existing" or member.name not in app.members:
            return
        if member.binaries.live and not (self._own and self._own.member_id):
            return
        try:
            member.settle(app.members)
        except (HostError, OSError) as error:
            logger.warning("cannot settle the etcd config: %s", error)

    def _member_client_urls(self, member: workload.Member, relation: ops.Relation) -> list[str]:
        """Where to reach the cluster: the members the leader published, and voting units.

        A member's client URL is its peer URL's host on the client port; a voting unit's is
        its validated peer data's. This unit's own URL is left out until it is a voting
        member: a learner cannot answer cluster requests, and etcdctl tries its endpoints in
        turn.
        """
        port = member.config.client_port
        app = self._app_data(relation)
        urls = {_on_port(url, port) for url in app.members.values()} if app else set()
        urls |= {d.client_url for d in self._remote_peers(relation).values() if d.member_id}
        own_voting = self._own.member_id if self._own else _own_member_id(relation.data[self.unit])
        if own_voting:
            urls.add(member.client_url)
        else:
            urls.discard(member.client_url)
        return sorted(urls)

    # -- leaving -------------------------------------------------------------------------------

    def _leave(self) -> None:
        """Remove this unit's member before it stops, unless that would lose quorum.

        Touches only this machine and etcd's member list: never relation data.
        """
        if self.host.exists(DEPARTED_MARKER):
            self._status = ops.MaintenanceStatus("this unit left the cluster; etcd is stopped")
            return
        try:
            member = self._member(install=False)
        except Exception as error:
            logger.warning("leaving without touching etcd: %s", error)
            self._status = ops.MaintenanceStatus("leaving")
            return
        relation = self.model.get_relation(PEER)
        endpoints = self._member_client_urls(member, relation) if relation else []
        if member.binaries.live and member.is_running():
            try:
                listed = member.member_list(endpoints or None)
                me = next((m for m in listed if member.peer_url in m.peer_urls), None)
                blocker = None if me is None else member.remove_safely(me.id, endpoints)
            except workload.EtcdError as error:
                blocker = f"etcd could not be asked: {error}"
            if blocker:
                logger.error("not leaving the etcd cluster: %s; the data is kept", blocker)
                self._status = ops.BlockedStatus(f"not leaving: {blocker}; data kept")
                return
            member.retire_data("left")
        else:
            member.stop()
        self.host.ensure_directory(workload.DATA_ROOT, 0o700)
        self.host.write_file(DEPARTED_MARKER, "left the cluster\n")
        self._status = ops.MaintenanceStatus("this unit left the cluster; etcd is stopped")

    # -- clients (db relation) -----------------------------------------------------------------

    def _serve_clients(self, member: workload.Member, relation: ops.Relation) -> None:
        from kaji import certs, pki
        from kaji.interfaces.etcd import (
            EtcdProviderApp,
            expected_client_identity,
            read_provider_app,
            read_requirer_unit,
        )

        db_relations = self.model.relations.get(DB, [])
        if not db_relations:
            return
        ca = self._ca()
        if ca is None:
            return
        urls = self._client_urls(member, relation)
        if not urls:
            return
        for db in db_relations:
            bag = db.data[self.app]
            try:
                current = read_provider_app(bag)
            except RelationDataError:
                current = None
            issued: dict[str, str] = {}
            for unit in sorted(db.units, key=lambda u: u.name):
                try:
                    request = read_requirer_unit(db.data[unit], unit.name)
                    if request is None:
                        continue
                    issued[unit.name] = certs.issue(
                        request.client_csr,
                        expected_client_identity(unit.name),
                        ca,
                        pki.Profile.CLIENT,
                        current.certificate_for(unit.name) if current else None,
                    )
                except (RelationDataError, pki.PKIError) as error:
                    self._refuse(unit.name, "client certificate request", error)
            try:
                data = EtcdProviderApp(
                    client_urls=tuple(urls), ca_cert=ca.cert_pem, certificates=issued
                )
            except RelationDataError as error:  # e.g. a member etcd lists with an odd URL
                logger.error("not publishing to the clients: %s", error)
                self._notes.append(f"cannot publish to the clients: {error.key} {error.reason}")
                return
            update_databag(bag, data.to_databag())

    def _client_urls(self, member: workload.Member, relation: ops.Relation) -> list[str]:
        """Client URLs of the healthy members (live) or of the recorded members."""
        if member.binaries.live:
            return self._cluster_view(member, relation).healthy_client_urls()
        app = self._app_data(relation)
        if app is None:
            return []
        # Only validated peer data: a refused peer's URL is never published.
        by_name = {d.member_name: d.client_url for d in self._peer_units(relation).values()}
        return sorted(by_name[n] for n in app.members if n in by_name)

    # -- status ----------------------------------------------------------------------------

    def _cluster_view(
        self,
        member: workload.Member,
        relation: ops.Relation,
        endpoints: list[str] | None = None,
    ) -> ClusterView:
        """What etcd says (asked once per dispatch, through ``endpoints`` when given)."""
        if self._view is not None:
            return self._view
        if not member.binaries.live:
            self._view = ClusterView(live=False)
            return self._view
        if endpoints is None:
            endpoints = self._member_client_urls(member, relation) or [member.client_url]
        view = ClusterView(live=True)
        try:
            view.members = member.member_list(endpoints)
            urls = [m.client_urls[0] for m in view.voters() if m.client_urls]
            health = member.endpoint_health(urls)
            view.healthy = {
                m.id for m in view.voters() if m.client_urls and health[m.client_urls[0]]
            }
            view.leader_id = member.leader_id(sorted(u for u, ok in health.items() if ok))
        except workload.EtcdError as error:
            view.error = str(error).splitlines()[-1][:120]
        self._view = view
        return view

    def _cluster_status(self, member: workload.Member, relation: ops.Relation) -> ops.StatusBase:
        suffix = self._notes_text()
        if not member.binaries.live:
            app = self._app_data(relation)
            count = len(app.members) if app else 0
            return ops.ActiveStatus(f"{members_text(count)} ({RECORDED_NOTE}){suffix}")
        view = self._cluster_view(member, relation)
        if view.error:
            return ops.WaitingStatus(f"etcd unreachable: {view.error}")
        voters = view.voters()
        me = next((m for m in view.members if member.peer_url in m.peer_urls), None)
        if me is None:
            return ops.WaitingStatus("waiting to be added to the cluster")
        if me.is_learner:
            return ops.WaitingStatus("learner: catching up before promotion")
        healthy = [m for m in voters if m.id in view.healthy]
        quorum = len(voters) // 2 + 1
        leader = next((m.name for m in voters if m.id == view.leader_id), None)
        leader_text = f"leader {unit_of_member(leader)}" if leader else "no leader"
        if len(healthy) < quorum:
            sick = ", ".join(sorted(m.name or m.hex_id for m in voters if m not in healthy))
            return ops.BlockedStatus(
                f"no quorum: {len(healthy)} of {len(voters)} members healthy (unhealthy: {sick}); "
                "restart or replace them, or restore from a snapshot"
            )
        if len(healthy) < len(voters):
            sick = ", ".join(sorted(m.name or m.hex_id for m in voters if m not in healthy))
            return ops.ActiveStatus(
                f"degraded: {len(healthy)} of {len(voters)} members healthy (unhealthy: {sick}), "
                f"{leader_text}{suffix}"
            )
        return ops.ActiveStatus(f"healthy, {members_text(len(voters))}, {leader_text}{suffix}")

    def assess_status(self) -> ops.StatusBase | None:
        """The status this dispatch's reconcile (or leave) reached; None when none ran.

        Read-only: collect-status also runs after actions, which must change nothing.
        """
        return self._status

    # -- cheap update-status (kaji.operator's record) -------------------------------------------

    def reconcile_inputs(self) -> dict[str, Any]:
        """Besides config, leadership and relation data, a reconcile reads address and hostname."""
        return {
            "address": self._address(),
            "bind": self._address("bind"),
            "hostname": dns_hostname(self.host.hostname),
        }

    def still_healthy(self, record: ReconcileRecord) -> bool:
        """This member still runs as the last reconcile left it (live: cluster settled).

        Recorded only (a sandbox without etcd), the inputs digest covers everything the status
        says, so this needs neither etcd nor the workload module.
        """
        service = record.facts.get("service")
        if not isinstance(service, str):
            return False
        if self.host.exists(DEPARTED_MARKER) or self._leaving():
            return False
        if not self.host.services.is_running(service):
            return False
        relation = self.model.get_relation(PEER)
        if relation is None:
            return False
        if record.facts.get("live") is False:
            return True
        endpoints, expected = record.facts.get("endpoints"), record.facts.get("members")
        if not isinstance(endpoints, list) or not isinstance(expected, list):
            return False
        member = self._member(install=False)
        if not member.binaries.live:
            return False  # it was live at the last reconcile: look again in full
        # The digest is unchanged, so the relation data (and the endpoints and members the
        # last reconcile read from it) are too: nothing needs reading or validating again.
        view = self._cluster_view(member, relation, [str(e) for e in endpoints])
        status = self._cluster_status(member, relation)
        settled = not any(m.is_learner or not m.started for m in view.members)
        return (
            isinstance(status, ops.ActiveStatus)
            and settled
            and {m.name for m in view.members} == {str(n) for n in expected}
            and (status.name, status.message) == record.status
        )

    # -- actions ---------------------------------------------------------------------------

    def _action_member(self, event: ops.ActionEvent) -> workload.Member | None:
        """This unit's running member for an action (which installs and writes nothing)."""
        try:
            member = self._member(install=False)
        except Exception as error:
            event.fail(f"etcd is not set up on this unit: {error}")
            return None
        if not member.binaries.live:
            event.fail(RECORDED_NOTE)
            return None
        if not member.is_running():
            event.fail("etcd is not running on this unit")
            return None
        return member

    def _on_snapshot_action(self, event: ops.ActionEvent) -> None:
        member = self._action_member(event)
        if member is None:
            return
        path = event.params.get("path") or None
        if path is not None and not str(path).startswith("/"):
            event.fail("path must be absolute")
            return
        try:
            info = member.snapshot(path)
        except workload.EtcdError as error:
            event.fail(f"snapshot failed: {error}")
            return
        event.set_results(
            {
                "path": info.path,
                "size": info.size,
                "sha256": info.sha256,
                "revision": info.revision,
                "keys": info.total_keys,
            }
        )

    def _on_restore_action(self, event: ops.ActionEvent) -> None:
        """Restore the snapshot as a new one-member cluster and publish that (its whole job).

        The other units set their data aside when they see the new cluster token, and the
        leader adds them back one by one in the hooks that follow, as for any new member.
        """
        if not self.unit.is_leader():
            event.fail("run restore on the leader unit (juju run etcd/leader restore)")
            return
        if self._leaving():
            event.fail("this unit is being removed; run restore on the next leader")
            return
        member = self._action_member(event)
        relation = self.model.get_relation(PEER)
        if member is None or relation is None:
            if relation is None:
                event.fail("no peer relation yet")
            return
        path = event.params.get("path")
        if path and not str(path).startswith("/"):
            event.fail("path must be absolute")
            return
        if path:
            real = str(self.host.path(str(path)))
        else:
            try:
                real = str(self.model.resources.fetch("snapshot"))
            except (ops.ModelError, NameError):
                event.fail("give path= or attach the snapshot resource")
                return
        current = self._app_data(relation)
        if current is None:
            event.fail("the cluster is not set up yet")
            return
        token = f"kaji-etcd-{secrets.token_hex(8)}"
        event.log(f"restoring {path or 'the snapshot resource'} as a new cluster")
        try:
            member.restore(real, token)
        except workload.EtcdError as error:
            event.fail(f"restore failed: {error}")
            return
        if not member.wait_healthy(timeout=60):
            event.fail("restored member did not become healthy; see its log")
            return
        from kaji.interfaces.etcd_peers import EtcdPeerApp

        own = member.own_id()
        ids = {member.name: f"{own:x}"} if own is not None else {}
        if own is not None:
            record = member.join_record()
            if record is not None:
                member.write_join_record(workload.with_member_id(record, f"{own:x}"))
        app = EtcdPeerApp(
            ca_cert=current.ca_cert,
            cluster_token=token,
            cluster_state="existing",
            members={member.name: member.peer_url},
            certificates=current.certificates,
            member_ids=ids,
            recorded_only=False,
        )
        update_databag(relation.data[self.app], app.to_databag())
        status = member.snapshot_status(real)
        event.set_results(
            {"member": member.name, "revision": status.get("revision", 0), "token": token}
        )

    def _on_health_action(self, event: ops.ActionEvent) -> None:
        member = self._action_member(event)
        relation = self.model.get_relation(PEER)
        if member is None or relation is None:
            return
        view = self._cluster_view(member, relation)
        if view.error:
            event.fail(f"etcd unreachable: {view.error}")
            return
        leader = next((m.name for m in view.members if m.id == view.leader_id), "")
        event.set_results(
            {
                "leader": leader,
                "healthy": str(len(view.healthy) == len(view.voters())).lower(),
                "members": {
                    m.name or m.hex_id: {
                        "id": m.hex_id,
                        "healthy": str(m.id in view.healthy).lower(),
                        "learner": str(m.is_learner).lower(),
                        "client-url": ",".join(m.client_urls),
                    }
                    for m in view.members
                },
            }
        )

    def _on_member_list_action(self, event: ops.ActionEvent) -> None:
        member = self._action_member(event)
        relation = self.model.get_relation(PEER)
        if member is None or relation is None:
            return
        try:
            members = member.member_list(self._member_client_urls(member, relation) or None)
        except workload.EtcdError as error:
            event.fail(str(error))
            return
        event.set_results(
            {
                "members": json.dumps(
                    [
                        {
                            "id": m.hex_id,
                            "name": m.name,
                            "peer-urls": list(m.peer_urls),
                            "client-urls": list(m.client_urls),
                            "learner": m.is_learner,
                        }
                        for m in members
                    ],
                    sort_keys=True,
                ),
                "count": len(members),
            }
        )

    def _on_defrag_action(self, event: ops.ActionEvent) -> None:
        member = self._action_member(event)
        relation = self.model.get_relation(PEER)
        if member is None or relation is None:
            return
        endpoints = [member.client_url]
        try:
            if event.params.get("all"):
                listed = member.member_list(self._member_client_urls(member, relation))
                endpoints = sorted(m.client_urls[0] for m in listed if m.client_urls)
            output = member.defrag(endpoints)
        except workload.EtcdError as error:
            event.fail(f"defrag failed: {error}")
            return
        event.set_results({"output": output, "members": len(endpoints)})


class _NotReadyError(Exception):
    def __init__(self, status: ops.StatusBase) -> None:
        super().__init__(status.message)
        self.status = status


def _member_cert_expiry(host: Host) -> str | None:
    """``member certificate expires in N days`` when under EXPIRY_WARNING_DAYS, else None."""
    from kaji import clock, pki

    cert = host.read_text(f"{workload.PKI_DIR}/{workload.MEMBER_KEY_NAME}.crt")
    if not cert:
        return None
    try:
        info = pki.read_certificate(cert)
    except pki.PKIError:
        return None
    left = info.not_after - clock.now()
    if left.days >= EXPIRY_WARNING_DAYS:
        return None
    return f"member certificate expires in {max(left.days, 0)} days"


def _etcd_on_path() -> bool:
    import shutil

    return bool(shutil.which("etcd") and shutil.which("etcdctl"))


def _own_member_id(bag: ops.RelationDataContent) -> str | None:
    """This unit's published member-id; a malformed one is dropped (it is rewritten)."""
    try:
        return etcd_peers.read_member_id(bag)
    except RelationDataError as error:
        logger.warning("dropping this unit's malformed member-id: %s", error)
        return None


def _cluster_token(member: workload.Member) -> str:
    """The token of the cluster this member's data belongs to, or a new one.

    Used when the peer application data is missing or malformed: keeping the token the
    members' data was made with keeps them from setting it aside as another cluster's.
    """
    record = member.join_record()
    if record is not None and re.fullmatch(r"[A-Za-z0-9._-]{1,128}", record.token):
        return record.token
    return f"kaji-etcd-{secrets.token_hex(8)}"


def _on_port(url: str, port: int) -> str:
    """``https://<url's host>:<port>`` (IPv6 hosts bracketed)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _unit_number(unit: str) -> tuple[str, int]:
    app, _, number = unit.rpartition("/")
    return (app, int(number) if number.isdigit() else 0)


if __name__ == "__main__":  # pragma: nocover
    ops.main(EtcdCharm)

"""The control plane's relations (cluster peers, etcd, cni, kube-control) and app secrets.

Typed through kaji.interfaces only. Malformed data is logged and ignored
(``kaji.interfaces.read_or_refuse``); the refusal names the sender and the key, and
:mod:`kaji_control_plane.status` words the note or the wait from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping

import ops

from kaji import pki as kaji_pki
from kaji.app_secrets import app_secret_content
from kaji.certs import KeyAndRequest
from kaji.host import CommandTimeoutError, Host
from kaji.interfaces import Refusal, RelationDataError, read_or_refuse, update_databag
from kaji.interfaces import cni as cni_if
from kaji.interfaces import control_plane_peers as peers
from kaji.interfaces import etcd as etcd_if
from kaji.interfaces import kube_control as kc
from kaji.juju import read_unit_bags

from . import pki, status
from .config import ControlPlaneConfig
from .files import SharedKeys, write_etcd_files
from .literals import (
    CA_SECRET,
    CNI,
    ENCRYPTION_SECRET,
    ETCD,
    ETCD_PKI_DIR,
    FRONT_PROXY_CA_SECRET,
    KUBE_CONTROL,
    PEER,
    PKI_DIR,
    SERVICE_ACCOUNT_SECRET,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Keys:
    """The app-owned secrets: what every unit writes, and the CAs the leader signs with."""

    shared: SharedKeys
    ca: kaji_pki.CertificateAuthority
    front_proxy_ca: kaji_pki.CertificateAuthority


def load_keys(charm: ops.CharmBase) -> Keys | None:
    """The shared keys (the leader creates each secret once); None until all four exist."""
    ca = app_secret_content(charm, CA_SECRET, lambda: pki.new_ca_content("kubernetes-ca"))
    fp = app_secret_content(
        charm, FRONT_PROXY_CA_SECRET, lambda: pki.new_ca_content("kubernetes-front-proxy-ca")
    )
    sa = app_secret_content(charm, SERVICE_ACCOUNT_SECRET, pki.new_service_account_content)
    enc = app_secret_content(charm, ENCRYPTION_SECRET, pki.new_encryption_content)
    if ca is None or fp is None or sa is None or enc is None:
        return None
    shared = SharedKeys(
        ca_cert=ca["cert"],
        front_proxy_ca_cert=fp["cert"],
        service_account_key=sa["key"],
        service_account_pub=sa["pub"],
        encryption_key=enc["key"],
    )
    return Keys(shared, pki.ca_from_content(ca), pki.ca_from_content(fp))


def public_address(host: Host) -> str | None:
    """The unit's public address as Juju reports it (``unit-get public-address``), or None.

    ops has no call for it; ``unit-get`` is the hook tool Juju puts on PATH in every hook
    and action. It answers the machine's public address (an IP, or on some clouds a DNS
    name), the one ``juju expose`` opens the API port on. Outside Juju (tests, the offline
    model) there is no such tool and the unit has no public address.
    """
    try:
        result = host.run(["unit-get", "public-address", "--format=json"], check=False, timeout=10)
    except CommandTimeoutError:
        logger.warning("unit-get public-address timed out")
        return None
    if not result.ok:
        return None
    try:
        value = json.loads(result.stdout)
    except ValueError:
        value = result.stdout
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return peers.check_public_address("public-address", value.strip().lower())
    except RelationDataError as exc:
        logger.warning("ignoring the public address Juju reports: %s", exc)
        return None


# --------------------------------------------------------------------------- cluster (peers)


def publish_peer_unit(
    relation: ops.Relation | None, unit: ops.Unit, own: peers.ControlPlanePeerUnit
) -> None:
    """This unit's hostname, addresses and CSRs in its peer databag."""
    if relation is not None:
        update_databag(relation.data[unit], own.to_databag())


def read_peer_app(
    relation: ops.Relation | None, app: ops.Application
) -> tuple[peers.ControlPlanePeerApp | None, Refusal | None]:
    """The leader's peer application data, or why it is refused."""
    if relation is None:
        return None, None
    found = read_or_refuse(
        peers.read_peer_app, relation.data[app], sender=app.name, what="peer data", log=logger
    )
    return (None, found) if isinstance(found, Refusal) else (found, None)


def read_peer_units(
    relation: ops.Relation | None, own_unit: ops.Unit, own: peers.ControlPlanePeerUnit
) -> tuple[dict[str, peers.ControlPlanePeerUnit], list[Refusal]]:
    """Leader: every control-plane unit's peer data, this unit's included (others: own only).

    Malformed peer data is refused (whose, which key) and left out until it is valid.
    """
    units = {own_unit.name: own}
    refusals: list[Refusal] = []
    if relation is None or not own_unit.is_leader():
        return units, refusals
    found, refused = read_unit_bags(
        relation,
        relation.units,
        lambda _, bag: peers.read_peer_unit(bag),
        what="peer data",
        log=logger,
    )
    units.update((unit.name, data) for unit, data in found)
    return units, [*refusals, *refused]


def sign_peers(
    settings: ControlPlaneConfig,
    keys: Keys,
    units: Mapping[str, peers.ControlPlanePeerUnit],
    existing: peers.ControlPlanePeerApp | None,
    notes: status.Notes,
) -> peers.ControlPlanePeerApp:
    """Leader: (re)sign every unit's CSRs; the peer application data to publish."""
    signing = pki.sign_peer_certificates(
        units, keys.ca, keys.front_proxy_ca, settings, existing.certificates if existing else {}
    )
    for unit, (purpose, reason) in sorted(signing.refused.items()):
        notes.add(status.refused_peer_certificate(unit, purpose, reason))
    return peers.ControlPlanePeerApp(
        ca_cert=keys.shared.ca_cert,
        front_proxy_ca_cert=keys.shared.front_proxy_ca_cert,
        certificates=signing.certificates,
        departed_nodes=existing.departed_nodes if existing else (),
    )


def publish_peer_app(
    relation: ops.Relation | None, app: ops.Application, data: peers.ControlPlanePeerApp
) -> None:
    """Leader: the CAs, every unit's certificates and the Nodes left to delete."""
    if relation is not None:
        update_databag(relation.data[app], data.to_databag())


@dataclasses.dataclass(frozen=True)
class PeerExchange:
    """This unit's certificate requests, and what the peer relation gave back."""

    requests: dict[str, KeyAndRequest]
    #: Every control-plane unit's hostname (leader: all units'; others: its own).
    hostnames: frozenset[str]
    #: Leader: the peer application data it publishes (None on other units).
    peer_app: peers.ControlPlanePeerApp | None
    #: The purposes still waiting for a certificate from the leader.
    missing: list[str]


def exchange_peer_certificates(
    charm: ops.CharmBase,
    host: Host,
    settings: ControlPlaneConfig,
    keys: Keys,
    hostname: str,
    addresses: list[str],
    notes: status.Notes,
) -> PeerExchange:
    """Publish this unit's CSRs; the leader signs every unit's; install this unit's."""
    unit, app = charm.unit, charm.app
    public = public_address(host)
    requests = pki.ensure_requests(host, hostname, addresses, settings, public)
    csrs = {purpose: r.csr_pem for purpose, r in requests.items()}
    own = peers.ControlPlanePeerUnit(hostname, tuple(addresses), csrs, public_address=public)
    relation = charm.model.get_relation(PEER)
    publish_peer_unit(relation, unit, own)
    existing, refusal = read_peer_app(relation, app)
    units, refusals = read_peer_units(relation, unit, own)
    for refused in refusals:
        notes.add(status.ignored_peer_data(refused))
    peer_app: peers.ControlPlanePeerApp | None = None
    if unit.is_leader():
        peer_app = sign_peers(settings, keys, units, existing, notes)
        certificates: Mapping[str, str] = peer_app.certificates_for(unit.name)
    else:
        certificates = existing.certificates_for(unit.name) if existing else {}
        if refusal is not None:
            notes.add(status.ignored_leader_data(refusal))
    missing = pki.install_own_certificates(host, requests, certificates, keys.shared)
    hostnames = frozenset(data.hostname for data in units.values())
    return PeerExchange(requests, hostnames, peer_app, missing)


# --------------------------------------------------------------------------- etcd


def exchange_etcd(charm: ops.CharmBase, host: Host) -> tuple[list[str], str | None]:
    """Send our etcd CSR; install what etcd sent. Returns (member URLs, waiting message)."""
    relation, unit = charm.model.get_relation(ETCD), charm.unit
    if relation is None:
        return [], status.NO_ETCD
    request = pki.ensure_etcd_request(host, unit.name)
    update_databag(relation.data[unit], etcd_if.EtcdRequirerUnit(request.csr_pem).to_databag())
    provider: etcd_if.EtcdProviderApp | Refusal | None = None
    sender = relation.app.name if relation.app is not None else "etcd"
    if relation.app is not None:
        provider = read_or_refuse(
            etcd_if.read_provider_app,
            relation.data[relation.app],
            sender=sender,
            what="application data",
            log=logger,
        )
        if isinstance(provider, Refusal):
            return [], status.invalid_etcd_data(provider)
    if provider is None:
        return [], status.NO_ETCD_DATA
    write_etcd_files(host, provider.ca_cert)
    cert = provider.certificate_for(unit.name)
    if not pki.install_certificate(host, request, cert, provider.ca_cert, "client"):
        if cert is None:
            return [], status.NO_ETCD_CERTIFICATE
        return [], status.mismatched_etcd_certificate(sender, unit.name)
    return list(provider.client_urls), None


# --------------------------------------------------------------------------- cni


def read_pod_cidr(charm: ops.CharmBase) -> tuple[str | None, str]:
    """The pod network the cni reports, and the waiting message while there is none."""
    relation = charm.model.get_relation(CNI)
    wait = status.NO_POD_NETWORK
    if relation is None:
        return None, wait
    for unit in sorted(relation.units, key=lambda u: u.name):
        data = read_or_refuse(
            cni_if.read_cni_unit, relation.data[unit], sender=unit.name, what="data", log=logger
        )
        if isinstance(data, Refusal):
            wait = status.invalid_cni_data(data)
        elif data is not None:
            return data.cluster_cidr, wait
    return None, wait


def publish_cni(charm: ops.CharmBase, settings: ControlPlaneConfig, hostname: str) -> None:
    """The service network and this unit's node name, for the cni subordinate."""
    relation = charm.model.get_relation(CNI)
    if relation is not None:
        data = cni_if.CniPrincipalUnit(service_cidr=settings.service_cidr, node_name=hostname)
        update_databag(relation.data[charm.unit], data.to_databag())


# --------------------------------------------------------------------------- kube-control


def _read_provider_app(
    relation: ops.Relation, app: ops.Application
) -> kc.KubeControlProviderApp | None:
    found = read_or_refuse(
        kc.read_provider_app,
        relation.data[app],
        sender=app.name,
        what="kube-control data",
        log=logger,
    )
    return None if isinstance(found, Refusal) else found


def publish_kube_control(
    charm: ops.CharmBase,
    settings: ControlPlaneConfig,
    keys: Keys,
    api_endpoint: str,
    exchange: PeerExchange,
    notes: status.Notes,
) -> peers.ControlPlanePeerApp | None:
    """Publish on kube-control; leader: sign nodes, return the Nodes left to delete.

    Those are the pending deletions (from the peer data) plus the nodes of workers that
    held a certificate and are gone, less every node name a present worker claims; the
    leader keeps them in its peer application data (returned) until they are deleted.
    """
    peer_app = exchange.peer_app
    departed = _publish_kube_control(
        charm.model.relations.get(KUBE_CONTROL, []),
        charm.unit,
        charm.app,
        settings,
        keys,
        api_endpoint,
        exchange.hostnames,
        peer_app.departed_nodes if peer_app is not None else (),
        notes,
    )
    if peer_app is None:
        return None
    return keep_departed(charm, peer_app, departed)


def keep_departed(
    charm: ops.CharmBase, peer_app: peers.ControlPlanePeerApp, departed: tuple[str, ...]
) -> peers.ControlPlanePeerApp:
    """Leader: publish the peer application data with these Nodes left to delete."""
    peer_app = dataclasses.replace(peer_app, departed_nodes=departed)
    publish_peer_app(charm.model.get_relation(PEER), charm.app, peer_app)
    return peer_app


def _publish_kube_control(
    relations: list[ops.Relation],
    unit: ops.Unit,
    app: ops.Application,
    settings: ControlPlaneConfig,
    keys: Keys,
    api_endpoint: str,
    control_plane_hostnames: Iterable[str],
    pending_deletions: Iterable[str],
    notes: status.Notes,
) -> tuple[str, ...]:
    own = kc.KubeControlProviderUnit(api_endpoint=api_endpoint).to_databag()
    for relation in relations:
        update_databag(relation.data[unit], own)
    if not unit.is_leader():
        return ()
    departed = set(pending_deletions)
    if not relations:
        return tuple(sorted(departed))
    workers: dict[str, Mapping[str, str]] = {}
    existing: dict[str, str] = {}
    for relation in relations:
        for worker in relation.units:
            workers[worker.name] = relation.data[worker]
        current = _read_provider_app(relation, app)
        if current is not None:
            existing.update(current.certificates)
    signing = pki.sign_node_certificates(
        workers, keys.ca, existing, pki.reserved_node_names(settings, control_plane_hostnames)
    )
    for unit_name, reason in sorted(signing.refused.items()):
        notes.add(status.refused_node_certificate(unit_name, reason))
    for unit_name, cert in existing.items():
        if unit_name not in workers and (name := pki.node_name_of_certificate(cert)):
            logger.info("worker %s departed: its Node %s is to be deleted", unit_name, name)
            departed.add(name)
    for relation in relations:
        names = {worker.name for worker in relation.units}
        data = kc.KubeControlProviderApp(
            ca_cert=keys.shared.ca_cert,
            service_cidr=settings.service_cidr,
            dns_address=settings.dns_address,
            dns_domain=settings.dns_domain,
            kubernetes_version=str(settings.version),
            image_registry=settings.image_registry,
            certificates={u: c for u, c in signing.certificates.items() if u in names},
        )
        update_databag(relation.data[app], data.to_databag())
    return tuple(sorted(departed - signing.claimed))


# --------------------------------------------------------------------------- renewal


def certificates_in_care(charm: ops.CharmBase, host: Host) -> list[str]:
    """The certificates a reconcile renews: this unit's, and (leader) those it signed."""
    unit = charm.unit
    peer = charm.model.get_relation(PEER)
    kube_control = charm.model.relations.get(KUBE_CONTROL, [])
    pems = [host.read_text(f"{PKI_DIR}/{purpose}.crt") or "" for purpose in peers.PURPOSES]
    pems.append(host.read_text(f"{ETCD_PKI_DIR}/client.crt") or "")
    if not unit.is_leader():
        return [p for p in pems if p]
    app, _ = read_peer_app(peer, unit.app)
    for by_purpose in app.certificates.values() if app else ():
        pems += by_purpose.values()
    for relation in kube_control:
        provider = _read_provider_app(relation, unit.app)
        pems += provider.certificates.values() if provider else ()
    return [p for p in pems if p]


__all__ = [
    "Keys",
    "PeerExchange",
    "certificates_in_care",
    "exchange_etcd",
    "exchange_peer_certificates",
    "load_keys",
    "public_address",
    "publish_cni",
    "publish_kube_control",
    "publish_peer_app",
    "publish_peer_unit",
    "read_peer_app",
    "read_peer_units",
    "read_pod_cidr",
    "sign_peers",
]

"""The control plane's keys and certificates: shared CA content, CSRs, signing peers and nodes.

No ops here: the charm passes plain data and a :class:`kaji.host.Host`.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import logging
import os
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING

from kaji import clock, pki
from kaji.certs import KeyAndRequest, ensure_key_and_csr, issue, usable_certificate
from kaji.interfaces import (
    Refusal,
    RelationDataError,
    etcd,
    juju_addresses,
    kube_control,
    read_or_refuse,
)
from kaji.interfaces import control_plane_peers as peers
from kaji.interfaces._base import Fields

from .literals import ETCD_PKI_DIR, PKI_DIR

if TYPE_CHECKING:
    from kaji.host import Host

    from .config import ControlPlaneConfig
    from .files import SharedKeys

logger = logging.getLogger(__name__)


def new_ca_content(common_name: str) -> dict[str, str]:
    """Secret content of a new CA: ``cert`` and ``key``."""
    ca = pki.create_ca(common_name)
    return {"cert": ca.cert_pem, "key": ca.key_pem}


def new_service_account_content() -> dict[str, str]:
    """Secret content of a new service-account signing key pair: ``key`` and ``pub``."""
    key = pki.generate_private_key()
    return {"key": key, "pub": pki.public_key_pem(key)}


def new_encryption_content() -> dict[str, str]:
    """Secret content of a new Secrets-at-rest key: ``key``, 32 random bytes base64."""
    return {"key": base64.b64encode(os.urandom(32)).decode()}


def ca_from_content(content: Mapping[str, str]) -> pki.CertificateAuthority:
    """A CertificateAuthority from secret content."""
    return pki.CertificateAuthority(cert_pem=content["cert"], key_pem=content["key"])


def apiserver_identity(
    hostname: str,
    addresses: Iterable[str],
    settings: ControlPlaneConfig,
    public_address: str | None = None,
) -> pki.Identity:
    """The exact identity of a unit's kube-apiserver serving certificate.

    Besides the unit's names and addresses and the in-cluster names: ``extra-sans``, the
    ``loadbalancer-address`` and the unit's public address (when Juju reports one).
    """
    return peers.expected_apiserver_identity(
        hostname,
        addresses,
        settings.service_ip,
        settings.dns_domain,
        settings.extra_dns_names,
        settings.extra_ip_addresses,
        public_address,
    )


def ensure_requests(
    host: Host,
    hostname: str,
    addresses: Iterable[str],
    settings: ControlPlaneConfig,
    public_address: str | None = None,
) -> dict[str, KeyAndRequest]:
    """Make (or reuse) this unit's key and CSR for every purpose."""
    identity = apiserver_identity(hostname, addresses, settings, public_address)
    requests = {peers.APISERVER: ensure_key_and_csr(host, PKI_DIR, peers.APISERVER, identity)}
    for purpose in peers.CLIENT_IDENTITIES:
        requests[purpose] = ensure_key_and_csr(
            host, PKI_DIR, purpose, peers.client_identity(purpose)
        )
    return requests


def ensure_etcd_request(host: Host, unit_name: str) -> KeyAndRequest:
    """Make (or reuse) this unit's etcd client key and CSR."""
    return ensure_key_and_csr(
        host, ETCD_PKI_DIR, "client", etcd.expected_client_identity(unit_name)
    )


def profile_for(purpose: str) -> pki.Profile:
    """The signing profile of a purpose."""
    return pki.Profile.SERVER if purpose == peers.APISERVER else pki.Profile.CLIENT


@dataclasses.dataclass(frozen=True)
class PeerSigning:
    """The outcome of signing peer CSRs: certificates by unit and purpose, and refusals."""

    certificates: dict[str, dict[str, str]]
    refused: dict[str, tuple[str, str]]  # unit -> (purpose, reason), the first refused


def sign_peer_certificates(
    units: Mapping[str, peers.ControlPlanePeerUnit],
    ca: pki.CertificateAuthority,
    front_proxy_ca: pki.CertificateAuthority,
    settings: ControlPlaneConfig,
    existing: Mapping[str, Mapping[str, str]],
) -> PeerSigning:
    """Leader: sign every peer unit's CSRs after checking each identity exactly.

    A CSR for another identity is refused and logged; a still-good certificate is kept; units
    not in ``units`` (departed) get nothing.
    """
    issued: dict[str, dict[str, str]] = {}
    refused: dict[str, tuple[str, str]] = {}
    for unit, data in sorted(units.items()):
        certs: dict[str, str] = {}
        for purpose, csr in data.csrs.items():
            if purpose == peers.APISERVER:
                expected = apiserver_identity(
                    data.hostname, data.addresses, settings, data.public_address
                )
            else:
                expected = peers.client_identity(purpose)
            signer = front_proxy_ca if purpose in peers.FRONT_PROXY_PURPOSES else ca
            try:
                certs[purpose] = issue(
                    csr,
                    expected,
                    signer,
                    profile_for(purpose),
                    existing.get(unit, {}).get(purpose),
                )
            except pki.PKIError as exc:
                logger.warning("refusing %s CSR of %s: %s", purpose, unit, exc)
                refused.setdefault(unit, (purpose, str(exc)[:160]))
        if certs:
            issued[unit] = certs
    return PeerSigning(issued, refused)


@dataclasses.dataclass(frozen=True)
class NodeSigning:
    """The outcome of signing worker node CSRs: certificates and what was refused, why."""

    certificates: dict[str, str]
    refused: dict[str, str]
    #: Node names the present workers claim, valid or not: never deleted as departed.
    claimed: frozenset[str] = frozenset()


def node_name_claimed(bag: Mapping[str, str]) -> str | None:
    """The node name a worker's databag claims, read leniently (None if it names none).

    Leniently: a worker whose data is refused may still run a Node by that name, so its claim
    counts against deleting one; anything that is not a JSON string claims nothing.
    """
    try:
        value = Fields({k: v for k, v in bag.items() if k == "node-name"}).optional("node-name")
    except RelationDataError:
        return None
    return value if isinstance(value, str) and value else None


def node_name_of_certificate(cert_pem: str) -> str | None:
    """The node name a node certificate this leader issued is for (its CN), or None."""
    try:
        common_name = pki.read_certificate(cert_pem).identity.common_name
    except pki.PKIError:
        return None
    prefix = kube_control.NODE_COMMON_NAME_PREFIX
    return common_name[len(prefix) :] if common_name.startswith(prefix) else None


def reserved_node_names(
    settings: ControlPlaneConfig, control_plane_hostnames: Iterable[str]
) -> frozenset[str]:
    """Names no worker may take as its node name: every DNS name an API server cert carries.

    A node certificate is signed by the cluster CA with server auth and carries its node name
    as a DNS SAN, so a worker named ``kubernetes`` (or after a control-plane host) could
    otherwise pose as the API server to clients that check that name.
    """
    return frozenset(
        {
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{settings.dns_domain}",
            *settings.extra_dns_names,
            *control_plane_hostnames,
        }
    )


def sign_node_certificates(
    workers: Mapping[str, Mapping[str, str]],
    ca: pki.CertificateAuthority,
    existing: Mapping[str, str],
    reserved_names: Collection[str] = (),
) -> NodeSigning:
    """Leader: sign each worker unit's node CSR when, and only when, it is that node's.

    ``workers`` maps each worker unit present on kube-control to its databag. A CSR is signed
    only if its CN is ``system:node:<the node name that unit published>``, its O is
    ``system:nodes`` and its SANs are that unit's addresses (those Juju reports for it, when
    Juju reports any). A node name claimed by two units goes to the one already holding a
    certificate for it (else the lowest unit) and is refused for the other; a name in
    ``reserved_names`` (see reserved_node_names) is refused outright. Departed units (not in
    ``workers``) lose their entry.
    """
    refused: dict[str, str] = {}
    claims: dict[str, kube_control.KubeControlRequirerUnit] = {}
    for unit, bag in workers.items():
        read = functools.partial(
            kube_control.read_requirer_unit, allowed_addresses=juju_addresses(bag) or None
        )
        data = read_or_refuse(read, bag, sender=unit, what="node data", log=logger)
        if isinstance(data, Refusal):
            # A CSR for the wrong identity says what is wrong; other keys are named.
            key, reason = data.key, data.reason
            refused[unit] = reason if key == "kubelet-csr" else f"{key}: {reason}"
        elif data is not None:
            claims[unit] = data

    def _unit_order(unit: str) -> tuple[int, str, int]:
        app, _, number = unit.partition("/")
        return (0 if unit in existing else 1, app, int(number) if number.isdigit() else 0)

    owners: dict[str, str] = {}
    for unit in sorted(claims, key=_unit_order):
        name = claims[unit].node_name
        if name in reserved_names:
            refused[unit] = f"node name {name!r} is reserved for the API server"
            continue
        if name in owners:
            refused[unit] = f"node name {name!r} is already used by {owners[name]}"
            continue
        owners[name] = unit

    certificates: dict[str, str] = {}
    for name, unit in sorted(owners.items()):
        data = claims[unit]
        expected = kube_control.expected_node_identity(name, data.addresses)
        try:
            certificates[unit] = issue(
                data.kubelet_csr, expected, ca, pki.Profile.PEER, existing.get(unit)
            )
        except pki.PKIError as exc:
            refused[unit] = str(exc)
    for unit, reason in sorted(refused.items()):
        logger.warning("refusing node certificate for %s: %s", unit, reason)
    claimed = frozenset(filter(None, (node_name_claimed(bag) for bag in workers.values())))
    return NodeSigning(certificates, refused, claimed)


def install_certificate(
    host: Host, request: KeyAndRequest, cert_pem: str | None, ca_cert_pem: str, profile: str
) -> bool:
    """Install a certificate received for ``request`` if it is usable; return whether it is."""
    if not usable_certificate(cert_pem, request, ca_cert_pem, pki.Profile(profile)):
        return False
    assert cert_pem is not None
    host.write_file(request.cert_path, cert_pem, mode=0o644)
    return True


def install_own_certificates(
    host: Host,
    requests: Mapping[str, KeyAndRequest],
    certificates: Mapping[str, str],
    keys: SharedKeys,
) -> list[str]:
    """Install every usable certificate of this unit; return the purposes still waiting."""
    missing = []
    for purpose, request in requests.items():
        ca = keys.front_proxy_ca_cert if purpose in peers.FRONT_PROXY_PURPOSES else keys.ca_cert
        profile = profile_for(purpose).value
        if not install_certificate(host, request, certificates.get(purpose), ca, profile):
            missing.append(purpose)
    return missing


def earliest_renewal(pems: Iterable[str]) -> int | None:
    """When (epoch seconds) the first of these certificates is due for renewal, or None.

    Due means under a third of its lifetime left (``kaji.pki.renewal_due``); an unreadable
    certificate is due now.
    """
    due: list[float] = []
    for pem in pems:
        try:
            info = pki.read_certificate(pem)
        except pki.PKIError:
            due.append(0)  # due now (and stable: the record is not rewritten every hook)
            continue
        lifetime = info.not_after - info.not_before
        due.append((info.not_after - lifetime / 3).timestamp())
    return int(min(due)) if due else None


def nearest_expiry(host: Host) -> str | None:
    """The status note when one of this unit's certificates expires within 30 days."""
    days_left: list[int] = []
    for purpose in peers.PURPOSES:
        cert = host.read_text(f"{PKI_DIR}/{purpose}.crt")
        if cert and pki.expires_within(cert, 30):
            info = pki.read_certificate(cert)
            days_left.append((info.not_after - clock.now()).days)
    if not days_left:
        return None
    return f"a certificate expires in {max(min(days_left), 0)} days"

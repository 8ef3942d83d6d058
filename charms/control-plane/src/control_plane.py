"""The Kubernetes control plane on one machine: settings, PKI, files, services, cluster setup.

No ops here: the charm (``charm.py``) reads Juju's view (config, relations, secrets) and calls
these functions with a :class:`kaji.host.Host` and plain data. Everything is idempotent: a
second call with the same inputs writes no file and restarts nothing.

Machine layout::

    /opt/kaji/kubernetes/<version>/           kube-apiserver, -controller-manager, -scheduler,
                                              kubectl (from the server release tarball)
    /etc/kubernetes/pki/                      ca.crt, front-proxy-ca.crt, sa.key (0600), sa.pub,
                                              <purpose>.key (0600) / .csr / .crt per purpose,
                                              etcd/ca.crt, etcd/client.{key,csr,crt}
    /etc/kubernetes/{controller-manager,scheduler,admin}.conf   kubeconfigs (0600)
    /etc/kubernetes/encryption-config.yaml    Secrets encrypted at rest (0600)
    /etc/kubernetes/audit-policy.yaml         audit policy; log in /var/log/kubernetes/audit.log
    /etc/kubernetes/manifests/*.yaml          cluster setup applied by the leader (RBAC, CoreDNS)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaji import kubernetes as k8s
from kaji.host import RecordingManager, ServiceChange, ServiceSpec
from kaji.interfaces import control_plane_peers as peers
from kaji.interfaces import kube_control

if TYPE_CHECKING:
    from kaji import pki
    from kaji.certs import KeyAndRequest
    from kaji.host import CommandResult, Host

logger = logging.getLogger(__name__)

KUBE_DIR = "/etc/kubernetes"
PKI_DIR = f"{KUBE_DIR}/pki"
ETCD_PKI_DIR = f"{PKI_DIR}/etcd"
MANIFEST_DIR = f"{KUBE_DIR}/manifests"
AUDIT_LOG = "/var/log/kubernetes/audit.log"
STATE_DIR = "/var/lib/kaji/control-plane"
BINARY_NAME = "kubernetes"
SERVICES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
CLUSTER_NAME = "kubernetes"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
AUTHORIZATION_MODES = ("AlwaysAllow", "AlwaysDeny", "ABAC", "Webhook", "RBAC", "Node")

# App-owned Juju secret labels and what they hold.
CA_SECRET = "cluster-ca"  # noqa: S105 - a label; holds cert, key
FRONT_PROXY_CA_SECRET = "front-proxy-ca"  # noqa: S105 - a label; holds cert, key
SERVICE_ACCOUNT_SECRET = "service-account-key"  # noqa: S105 - a label; holds key, pub
ENCRYPTION_SECRET = "encryption-key"  # noqa: S105 - a label; holds key (base64, 32 bytes)

KUBECONFIG_USERS = {
    "controller-manager": "system:kube-controller-manager",
    "scheduler": "system:kube-scheduler",
    "admin": "kubernetes-admin",
}


class BinaryError(Exception):
    """The Kubernetes binaries could not be installed."""


class ConfigError(ValueError):
    """An invalid config option: the unit blocks naming it, and nothing on the machine changes."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated config of the application."""

    version: k8s.KubernetesVersion
    service_cidr: str
    dns_domain: str
    extra_dns_names: tuple[str, ...]
    extra_ip_addresses: tuple[str, ...]
    loadbalancer_address: str | None
    image_registry: str
    authorization_mode: str
    audit_policy: str | None
    audit_log_maxage: int
    audit_log_maxbackup: int
    audit_log_maxsize: int
    api_extra_args: Mapping[str, str]
    controller_manager_extra_args: Mapping[str, str]
    scheduler_extra_args: Mapping[str, str]
    release_mirror: str
    kubernetes_sha256: str | None

    @property
    def service_ip(self) -> str:
        """The ``kubernetes`` service address (first host of the service CIDR)."""
        return k8s.apiserver_service_ip(self.service_cidr)

    @property
    def dns_address(self) -> str:
        """The cluster DNS service address (10th host of the service CIDR)."""
        return k8s.dns_address(self.service_cidr)

    @property
    def service_account_issuer(self) -> str:
        """The issuer of service-account tokens."""
        return f"https://kubernetes.default.svc.{self.dns_domain}"


def _split_words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def _check_san(option: str, word: str) -> tuple[str | None, str | None]:
    """One SAN of ``option``: (DNS name, None) or (None, IP address), normalised."""
    import ipaddress

    try:
        return None, ipaddress.ip_address(word).compressed
    except ValueError:
        pass
    try:
        return k8s.check_dns_domain(word.lower()), None
    except ValueError:
        pass
    hint = ""
    if "://" in word or word.rpartition(":")[2].isdigit() or "/" in word:
        hint = " (give the host alone: no scheme, port or path)"
    raise ConfigError(option, f"{word[:100]!r} is neither an IP address nor a DNS name{hint}")


def _check_sans(option: str, text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names: list[str] = []
    ips: list[str] = []
    for word in _split_words(text):
        name, ip = _check_san(option, word)
        if name is not None:
            names.append(name)
        if ip is not None:
            ips.append(ip)
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(ips))


def _int_option(options: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = options.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def parse_settings(options: Mapping[str, Any]) -> Settings:
    """Validate every option; raise ConfigError naming the first bad one.

    Raises:
        ConfigError: an invalid option (the charm blocks and changes nothing).
    """

    def text(name: str) -> str:
        value = options.get(name, "")
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string, got {value!r}")
        return value.strip()

    try:
        version = k8s.check_version(text("kubernetes-version"))
    except k8s.UnsupportedVersionError as exc:
        raise ConfigError("kubernetes-version", str(exc)) from None
    try:
        network = k8s.parse_cidr(text("service-cidr"))
        service_cidr = str(network)
        k8s.dns_address(service_cidr)
    except ValueError as exc:
        raise ConfigError("service-cidr", str(exc)) from None
    if network.version == 4 and network.prefixlen < 12:
        raise ConfigError("service-cidr", "an IPv4 service network must be /12 or smaller")
    if network.version == 6 and network.prefixlen < 108:
        raise ConfigError("service-cidr", "an IPv6 service network must be /108 or smaller")
    try:
        dns_domain = k8s.check_dns_domain(text("cluster-domain"))
    except ValueError as exc:
        raise ConfigError("cluster-domain", str(exc)) from None
    extra_dns, extra_ips = _check_sans("extra-sans", text("extra-sans"))
    lb = text("loadbalancer-address") or None
    if lb is not None:
        if len(_split_words(lb)) != 1:
            raise ConfigError(
                "loadbalancer-address", f"{lb[:100]!r} is not one IP address or DNS name"
            )
        lb_name, lb_ip = _check_san("loadbalancer-address", lb)
        lb = lb_name or lb_ip
        extra_dns = tuple(dict.fromkeys((*extra_dns, *filter(None, [lb_name]))))
        extra_ips = tuple(dict.fromkeys((*extra_ips, *filter(None, [lb_ip]))))
    try:
        registry = k8s.check_image_registry(text("image-registry"))
    except ValueError as exc:
        raise ConfigError("image-registry", str(exc)) from None
    modes = [m.strip() for m in text("authorization-mode").split(",") if m.strip()]
    if unknown := [m for m in modes if m not in AUTHORIZATION_MODES]:
        raise ConfigError("authorization-mode", f"unknown mode(s) {', '.join(unknown)}")
    if len(set(modes)) != len(modes):
        raise ConfigError("authorization-mode", "a mode is listed twice")
    if "Node" not in modes or "RBAC" not in modes:
        raise ConfigError("authorization-mode", "must include Node and RBAC")
    audit_policy = text("audit-policy") or None
    if audit_policy is not None:
        _check_audit_policy(audit_policy)
    extra: dict[str, Mapping[str, str]] = {}
    for option, component in (
        ("api-extra-args", "kube-apiserver"),
        ("controller-manager-extra-args", "kube-controller-manager"),
        ("scheduler-extra-args", "kube-scheduler"),
    ):
        try:
            extra[option] = k8s.check_extra_args(component, version, text(option))
        except k8s.ExtraArgsError as exc:
            raise ConfigError(option, str(exc)) from None
    try:
        mirror = text("release-mirror")
        k8s.server_tarball_url(version, "amd64", mirror)
    except ValueError as exc:
        raise ConfigError("release-mirror", str(exc)) from None
    sha = text("kubernetes-sha256").lower() or None
    if sha is not None:
        try:
            k8s.parse_sha256_file(sha)
        except ValueError:
            raise ConfigError("kubernetes-sha256", "must be 64 hex digits") from None
    return Settings(
        version=version,
        service_cidr=service_cidr,
        dns_domain=dns_domain,
        extra_dns_names=extra_dns,
        extra_ip_addresses=extra_ips,
        loadbalancer_address=lb,
        image_registry=registry,
        authorization_mode=",".join(modes),
        audit_policy=audit_policy,
        audit_log_maxage=_int_option(options, "audit-log-maxage", 0, 3650),
        audit_log_maxbackup=_int_option(options, "audit-log-maxbackup", 0, 1000),
        audit_log_maxsize=_int_option(options, "audit-log-maxsize", 1, 100000),
        api_extra_args=extra["api-extra-args"],
        controller_manager_extra_args=extra["controller-manager-extra-args"],
        scheduler_extra_args=extra["scheduler-extra-args"],
        release_mirror=mirror.rstrip("/"),
        kubernetes_sha256=sha,
    )


def _check_audit_policy(text: str) -> None:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("audit-policy", f"not YAML: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("kind") != "Policy"
        or doc.get("apiVersion") != "audit.k8s.io/v1"
        or not isinstance(doc.get("rules"), list)
        or not doc["rules"]
    ):
        raise ConfigError("audit-policy", "must be an audit.k8s.io/v1 Policy with rules")


def check_pod_cidr(settings: Settings, pod_cidr: str) -> None:
    """Refuse a service CIDR of another IP family than the pod network, or overlapping it.

    A single-stack cluster has one family: kube-proxy, the cni's rules and kubelet's cluster
    DNS address all assume the service and pod networks share it.

    Raises:
        ConfigError: on ``service-cidr``.
    """
    service, pods = k8s.parse_cidr(settings.service_cidr), k8s.parse_cidr(pod_cidr)
    if service.version != pods.version:
        raise ConfigError(
            "service-cidr",
            f"{settings.service_cidr} is IPv{service.version} but the pod network {pod_cidr}"
            f" (from cni) is IPv{pods.version}: the IP families must match",
        )
    if k8s.cidrs_overlap(settings.service_cidr, pod_cidr):
        raise ConfigError(
            "service-cidr", f"{settings.service_cidr} overlaps the pod network {pod_cidr}"
        )


# --------------------------------------------------------------------------- PKI


def new_ca_content(common_name: str) -> dict[str, str]:
    """Secret content of a new CA: ``cert`` and ``key``."""
    from kaji import pki

    ca = pki.create_ca(common_name)
    return {"cert": ca.cert_pem, "key": ca.key_pem}


def new_service_account_content() -> dict[str, str]:
    """Secret content of a new service-account signing key pair: ``key`` and ``pub``."""
    from kaji import pki

    key = pki.generate_private_key()
    return {"key": key, "pub": pki.public_key_pem(key)}


def new_encryption_content() -> dict[str, str]:
    """Secret content of a new Secrets-at-rest key: ``key``, 32 random bytes base64."""
    import base64

    return {"key": base64.b64encode(os.urandom(32)).decode()}


def ca_from_content(content: Mapping[str, str]) -> pki.CertificateAuthority:
    """A CertificateAuthority from secret content."""
    from kaji import pki

    return pki.CertificateAuthority(cert_pem=content["cert"], key_pem=content["key"])


def apiserver_identity(
    hostname: str,
    addresses: Iterable[str],
    settings: Settings,
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
    settings: Settings,
    public_address: str | None = None,
) -> dict[str, KeyAndRequest]:
    """Make (or reuse) this unit's key and CSR for every purpose."""
    from kaji.certs import ensure_key_and_csr

    identity = apiserver_identity(hostname, addresses, settings, public_address)
    requests = {peers.APISERVER: ensure_key_and_csr(host, PKI_DIR, peers.APISERVER, identity)}
    for purpose in peers.CLIENT_IDENTITIES:
        requests[purpose] = ensure_key_and_csr(
            host, PKI_DIR, purpose, peers.client_identity(purpose)
        )
    return requests


def ensure_etcd_request(host: Host, unit_name: str) -> KeyAndRequest:
    """Make (or reuse) this unit's etcd client key and CSR."""
    from kaji.certs import ensure_key_and_csr
    from kaji.interfaces import etcd

    return ensure_key_and_csr(
        host, ETCD_PKI_DIR, "client", etcd.expected_client_identity(unit_name)
    )


def profile_for(purpose: str) -> pki.Profile:
    """The signing profile of a purpose."""
    from kaji import pki

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
    settings: Settings,
    existing: Mapping[str, Mapping[str, str]],
) -> PeerSigning:
    """Leader: sign every peer unit's CSRs after checking each identity exactly.

    A CSR for another identity is refused and logged; a still-good certificate is kept; units
    not in ``units`` (departed) get nothing.
    """
    from kaji import pki
    from kaji.certs import issue

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
    from kaji.interfaces import RelationDataError
    from kaji.interfaces._base import Fields

    try:
        value = Fields({k: v for k, v in bag.items() if k == "node-name"}).optional("node-name")
    except RelationDataError:
        return None
    return value if isinstance(value, str) and value else None


def node_name_of_certificate(cert_pem: str) -> str | None:
    """The node name a node certificate this leader issued is for (its CN), or None."""
    from kaji import pki

    try:
        common_name = pki.read_certificate(cert_pem).identity.common_name
    except pki.PKIError:
        return None
    prefix = kube_control.NODE_COMMON_NAME_PREFIX
    return common_name[len(prefix) :] if common_name.startswith(prefix) else None


def reserved_node_names(
    settings: Settings, control_plane_hostnames: Iterable[str]
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
    from kaji import pki
    from kaji.certs import issue
    from kaji.interfaces import RelationDataError, juju_addresses

    refused: dict[str, str] = {}
    claims: dict[str, kube_control.KubeControlRequirerUnit] = {}
    for unit, bag in workers.items():
        juju = juju_addresses(bag)
        try:
            data = kube_control.read_requirer_unit(bag, allowed_addresses=juju or None)
        except RelationDataError as exc:
            # A CSR for the wrong identity says what is wrong; other keys are named.
            refused[unit] = exc.reason if exc.key == "kubelet-csr" else f"{exc.key}: {exc.reason}"
            continue
        if data is not None:
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
    from kaji import pki
    from kaji.certs import usable_certificate

    if not usable_certificate(cert_pem, request, ca_cert_pem, pki.Profile(profile)):
        return False
    assert cert_pem is not None
    host.write_file(request.cert_path, cert_pem, mode=0o644)
    return True


# --------------------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class SharedKeys:
    """What every control-plane unit needs from the app-owned secrets."""

    ca_cert: str
    front_proxy_ca_cert: str
    service_account_key: str
    service_account_pub: str
    encryption_key: str


def write_shared_files(host: Host, keys: SharedKeys) -> None:
    """CA certificates, the service-account key pair (key 0600) and the encryption config."""
    host.ensure_directory(KUBE_DIR, 0o755)
    host.ensure_directory(PKI_DIR, 0o750)
    host.write_file(f"{PKI_DIR}/ca.crt", keys.ca_cert, mode=0o644)
    host.write_file(f"{PKI_DIR}/front-proxy-ca.crt", keys.front_proxy_ca_cert, mode=0o644)
    host.write_file(f"{PKI_DIR}/sa.key", keys.service_account_key, mode=0o600)
    host.write_file(f"{PKI_DIR}/sa.pub", keys.service_account_pub, mode=0o644)
    host.write_file(
        f"{KUBE_DIR}/encryption-config.yaml",
        render_encryption_config(keys.encryption_key),
        mode=0o600,
    )


def render_encryption_config(key_b64: str) -> str:
    """EncryptionConfiguration: Secrets with secretbox, identity to read what predates it."""
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"secretbox": {"keys": [{"name": "kaji-1", "secret": key_b64}]}},
                    {"identity": {}},
                ],
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


DEFAULT_AUDIT_POLICY = """\
# kaji default audit policy: metadata for everything, no request bodies, health checks and
# the noisiest read-only system traffic skipped.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
  - RequestReceived
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version", "/metrics"]
  - level: None
    users: ["system:kube-scheduler", "system:kube-controller-manager"]
    verbs: ["get", "list", "watch"]
  - level: None
    resources:
      - group: "coordination.k8s.io"
        resources: ["leases"]
    verbs: ["get", "update"]
  - level: None
    resources:
      - group: ""
        resources: ["events"]
  - level: Metadata
"""


def write_audit_policy(host: Host, settings: Settings) -> None:
    """The audit policy (configured or the default) and the audit log directory."""
    host.write_file(
        f"{KUBE_DIR}/audit-policy.yaml",
        (settings.audit_policy or DEFAULT_AUDIT_POLICY).rstrip("\n") + "\n",
        mode=0o644,
    )
    host.ensure_directory(os.path.dirname(AUDIT_LOG), 0o750)


def write_etcd_files(host: Host, ca_cert: str) -> None:
    """The etcd CA certificate."""
    host.ensure_directory(ETCD_PKI_DIR, 0o750)
    host.write_file(f"{ETCD_PKI_DIR}/ca.crt", ca_cert, mode=0o644)


def write_kubeconfigs(
    host: Host, server: str, ca_cert: str, requests: Mapping[str, KeyAndRequest]
) -> list[str]:
    """Kubeconfigs (0600) for controller-manager, scheduler and admin; return their paths."""
    from kaji.kubeconfig import render_kubeconfig

    paths = []
    for purpose, user in KUBECONFIG_USERS.items():
        request = requests[purpose]
        cert = host.read_text(request.cert_path)
        assert cert is not None, f"{purpose} certificate must be installed first"
        path = f"{KUBE_DIR}/{purpose}.conf"
        host.write_file(
            path,
            render_kubeconfig(
                server=server,
                ca_cert_pem=ca_cert,
                client_cert_pem=cert,
                client_key_pem=request.key_pem,
                user=user,
                cluster=CLUSTER_NAME,
            ),
            mode=0o600,
        )
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- services


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this unit's services listen and find their binaries."""

    address: str
    bind_address: str
    loopback: str
    binaries: Mapping[str, str]  # binary name -> real path


def apiserver_flags(
    host: Host, settings: Settings, place: Placement, etcd_urls: Iterable[str]
) -> dict[str, str]:
    """kube-apiserver flags (before extra args); every one is in ``k8s.known_flags``."""
    p = host.path
    return {
        "advertise-address": place.address,
        "bind-address": place.bind_address,
        "secure-port": str(k8s.APISERVER_PORT),
        "allow-privileged": "true",
        "anonymous-auth": "false",
        "authorization-mode": settings.authorization_mode,
        "enable-admission-plugins": "NodeRestriction",
        "client-ca-file": str(p(f"{PKI_DIR}/ca.crt")),
        "tls-cert-file": str(p(f"{PKI_DIR}/apiserver.crt")),
        "tls-private-key-file": str(p(f"{PKI_DIR}/apiserver.key")),
        "tls-min-version": "VersionTLS12",
        "etcd-servers": ",".join(sorted(etcd_urls)),
        "etcd-cafile": str(p(f"{ETCD_PKI_DIR}/ca.crt")),
        "etcd-certfile": str(p(f"{ETCD_PKI_DIR}/client.crt")),
        "etcd-keyfile": str(p(f"{ETCD_PKI_DIR}/client.key")),
        "kubelet-certificate-authority": str(p(f"{PKI_DIR}/ca.crt")),
        "kubelet-client-certificate": str(p(f"{PKI_DIR}/apiserver-kubelet-client.crt")),
        "kubelet-client-key": str(p(f"{PKI_DIR}/apiserver-kubelet-client.key")),
        "kubelet-preferred-address-types": (
            "InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP"
        ),
        "service-cluster-ip-range": settings.service_cidr,
        "service-account-issuer": settings.service_account_issuer,
        "service-account-key-file": str(p(f"{PKI_DIR}/sa.pub")),
        "service-account-signing-key-file": str(p(f"{PKI_DIR}/sa.key")),
        "encryption-provider-config": str(p(f"{KUBE_DIR}/encryption-config.yaml")),
        "audit-policy-file": str(p(f"{KUBE_DIR}/audit-policy.yaml")),
        "audit-log-path": str(p(AUDIT_LOG)),
        "audit-log-maxage": str(settings.audit_log_maxage),
        "audit-log-maxbackup": str(settings.audit_log_maxbackup),
        "audit-log-maxsize": str(settings.audit_log_maxsize),
        "requestheader-client-ca-file": str(p(f"{PKI_DIR}/front-proxy-ca.crt")),
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "proxy-client-cert-file": str(p(f"{PKI_DIR}/front-proxy-client.crt")),
        "proxy-client-key-file": str(p(f"{PKI_DIR}/front-proxy-client.key")),
        "enable-aggregator-routing": "true",
        "profiling": "false",
    }


def controller_manager_flags(
    host: Host, settings: Settings, place: Placement, pod_cidr: str | None
) -> dict[str, str]:
    """kube-controller-manager flags (before extra args)."""
    p = host.path
    kubeconfig = str(p(f"{KUBE_DIR}/controller-manager.conf"))
    flags = {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": place.loopback,
        "leader-elect": "true",
        "use-service-account-credentials": "true",
        "service-account-private-key-file": str(p(f"{PKI_DIR}/sa.key")),
        "root-ca-file": str(p(f"{PKI_DIR}/ca.crt")),
        "client-ca-file": str(p(f"{PKI_DIR}/ca.crt")),
        "requestheader-client-ca-file": str(p(f"{PKI_DIR}/front-proxy-ca.crt")),
        "service-cluster-ip-range": settings.service_cidr,
        "cluster-name": CLUSTER_NAME,
        "allocate-node-cidrs": "false",
        "profiling": "false",
    }
    if pod_cidr:
        flags["cluster-cidr"] = pod_cidr
    return flags


def scheduler_flags(host: Host, place: Placement) -> dict[str, str]:
    """kube-scheduler flags (before extra args)."""
    kubeconfig = str(host.path(f"{KUBE_DIR}/scheduler.conf"))
    return {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": place.loopback,
        "leader-elect": "true",
        "profiling": "false",
    }


def service_specs(
    host: Host,
    settings: Settings,
    place: Placement,
    etcd_urls: Iterable[str],
    pod_cidr: str | None,
) -> list[ServiceSpec]:
    """The three control-plane services, extra args merged in (extra args win)."""
    p = host.path
    pki_files = [
        str(p(f"{PKI_DIR}/{name}"))
        for name in (
            "ca.crt",
            "front-proxy-ca.crt",
            "sa.key",
            "sa.pub",
            "apiserver.crt",
            "apiserver-kubelet-client.crt",
            "front-proxy-client.crt",
        )
    ]
    api = k8s.merge_args(
        apiserver_flags(host, settings, place, etcd_urls), settings.api_extra_args
    )
    cm = k8s.merge_args(
        controller_manager_flags(host, settings, place, pod_cidr),
        settings.controller_manager_extra_args,
    )
    sched = k8s.merge_args(scheduler_flags(host, place), settings.scheduler_extra_args)
    common: dict[str, Any] = {
        "after": ("network-online.target",),
        "wants": ("network-online.target",),
        "restart": "always",
        "restart_sec": 5,
        "limit_nofile": 65536,
    }
    return [
        ServiceSpec(
            "kube-apiserver",
            [place.binaries["kube-apiserver"], *k8s.render_args(api)],
            description="Kubernetes API server (kaji)",
            watched_files=[
                *pki_files,
                str(p(f"{ETCD_PKI_DIR}/ca.crt")),
                str(p(f"{ETCD_PKI_DIR}/client.crt")),
                str(p(f"{KUBE_DIR}/encryption-config.yaml")),
                str(p(f"{KUBE_DIR}/audit-policy.yaml")),
            ],
            **common,
        ),
        ServiceSpec(
            "kube-controller-manager",
            [place.binaries["kube-controller-manager"], *k8s.render_args(cm)],
            description="Kubernetes controller manager (kaji)",
            watched_files=[str(p(f"{KUBE_DIR}/controller-manager.conf")), *pki_files[:4]],
            **common,
        ),
        ServiceSpec(
            "kube-scheduler",
            [place.binaries["kube-scheduler"], *k8s.render_args(sched)],
            description="Kubernetes scheduler (kaji)",
            watched_files=[str(p(f"{KUBE_DIR}/scheduler.conf"))],
            **common,
        ),
    ]


def ensure_services(host: Host, specs: Iterable[ServiceSpec]) -> dict[str, ServiceChange]:
    """Start or restart each service as its spec requires."""
    return {spec.name: host.services.ensure(spec) for spec in specs}


def restart_recorded_services(host: Host) -> list[str]:
    """Stop and start every control-plane service set up here (the ``restart`` action)."""
    names = []
    for name in SERVICES:
        spec = host.services.get(name)
        if spec is None:
            continue
        host.services.stop(name)
        host.services.ensure(spec)
        names.append(name)
    return names


# --------------------------------------------------------------------------- binaries


def locate_binaries(
    host: Host, which: Callable[[str], str | None] = shutil.which
) -> dict[str, str]:
    """Sandbox: the binaries found on PATH; where any is missing, record services only.

    In a sandbox nothing is downloaded. If a server binary is not on this machine's PATH, the
    host's service manager becomes a RecordingManager (services recorded, never run) and the
    binaries are named at their install path.
    """
    found = {name: which(name) for name in k8s.SERVER_BINARIES}
    daemons_present = all(found[name] for name in SERVICES)
    if not daemons_present and host.services.runs_processes:
        host.services = RecordingManager(host.path("/var/lib/kaji/services"))
    install_dir = host.path(f"/opt/kaji/{BINARY_NAME}/current")
    return {
        name: (path if daemons_present and path else str(install_dir / name))
        for name, path in found.items()
    }


def install_release(
    host: Host,
    settings: Settings,
    resource: str | None,
    arch: str,
    fetch_text: Callable[[str], str],
) -> dict[str, str]:
    """Production: install the server binaries from the resource or the checksummed release.

    Raises:
        kaji.host.BinaryInstallError: a download, checksum or archive problem.
    """
    from kaji.host import BinaryInstallError, install_binaries, installed_version

    version = str(settings.version)
    kwargs: dict[str, Any] = {
        "files": list(k8s.SERVER_BINARIES),
        "strip_components": k8s.TARBALL_STRIP_COMPONENTS,
        "timeout": 120,
    }
    if resource is not None:
        result = install_binaries(
            host,
            BINARY_NAME,
            version,
            source=resource,
            sha256=settings.kubernetes_sha256,
            **kwargs,
        )
        current = result.current
    elif installed_version(host, BINARY_NAME) == version:
        current = host.path(f"/opt/kaji/{BINARY_NAME}/current")
    else:
        url = k8s.server_tarball_url(settings.version, arch, settings.release_mirror)
        sha = settings.kubernetes_sha256
        if sha is None:
            try:
                sha = k8s.parse_sha256_file(fetch_text(k8s.checksum_url(url)))
            except (OSError, ValueError) as exc:
                raise BinaryInstallError(f"cannot get the checksum of {url}: {exc}") from exc
        current = install_binaries(
            host, BINARY_NAME, version, url=url, sha256=sha, **kwargs
        ).current
    return {name: str(current / name) for name in k8s.SERVER_BINARIES}


def fetch_text(url: str, timeout: float = 30) -> str:
    """Download a small text file (a checksum), through the model's proxies.

    Raises:
        kaji.host.BinaryInstallError: a bad URL or proxy setting, or the download failed.
    """
    from kaji.host import fetch_text as fetch

    return fetch(url, timeout=timeout, limit=4096)


# --------------------------------------------------------------------------- cluster setup


def render_manifests(settings: Settings) -> dict[str, str]:
    """The cluster-setup manifests by file name: RBAC bindings and CoreDNS."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML
    )
    values = {
        "dns_address": settings.dns_address,
        "dns_domain": settings.dns_domain,
        "coredns_image": k8s.coredns_image(settings.image_registry, settings.version),
        "service_cidr": settings.service_cidr,
    }
    return {
        name: env.get_template(f"{name}.j2").render(**values)
        for name in ("rbac.yaml", "coredns.yaml")
    }


def write_manifests(host: Host, manifests: Mapping[str, str]) -> list[str]:
    """Write the manifests under ``/etc/kubernetes/manifests``; return their machine paths."""
    host.ensure_directory(MANIFEST_DIR, 0o755)
    paths = []
    for name, text in sorted(manifests.items()):
        path = f"{MANIFEST_DIR}/{name}"
        host.write_file(path, text, mode=0o644)
        paths.append(path)
    return paths


def manifests_digest(manifests: Mapping[str, str]) -> str:
    """A digest of the manifests, to apply them only when they change."""
    return hashlib.sha256(json.dumps(dict(sorted(manifests.items()))).encode()).hexdigest()


def applied_digest(host: Host) -> str | None:
    """The digest of the manifests last applied on this unit, if any."""
    text = host.read_text(f"{STATE_DIR}/applied-manifests.sha256")
    return text.strip() if text else None


#: kubectl's field manager for server-side apply: the owner of every field kaji sets.
FIELD_MANAGER = "kaji-control-plane"


def _kubectl(host: Host, kubectl: str) -> list[str]:
    """The kubectl command line as the cluster admin (this unit's kubeconfig), with a timeout."""
    kubeconfig = str(host.path(f"{KUBE_DIR}/admin.conf"))
    return [kubectl, "--kubeconfig", kubeconfig, "--request-timeout=10s"]


def _failure(result: CommandResult) -> str:
    """The first line of a failed command's error output, short enough for a status."""
    text = (result.stderr or result.stdout or "").strip()
    line = text.splitlines()[-1] if text else f"exit status {result.returncode}"
    return line[:160]


def api_ready(host: Host, kubectl: str) -> str | None:
    """None when the API answers ``/readyz`` as the admin, else why not (short)."""
    from kaji.host import CommandTimeoutError

    try:
        probe = host.run([*_kubectl(host, kubectl), "get", "--raw", "/readyz"], check=False)
    except CommandTimeoutError:
        return "API not ready: /readyz timed out"
    return None if probe.ok else f"API not ready: {_failure(probe)}"


def apply_manifests(
    host: Host, kubectl: str, paths: Iterable[str], digest: str, timeout: float = 60
) -> str | None:
    """Apply the manifests server-side as the admin; None when applied, else why not.

    ``kubectl apply --server-side --force-conflicts --field-manager=kaji-control-plane`` is
    idempotent: applying the same manifests again changes nothing, and fields kaji owns are
    taken back from whoever changed them. The digest of what was applied is recorded so an
    unchanged set is not applied again.
    """
    from kaji.host import CommandTimeoutError

    if (reason := api_ready(host, kubectl)) is not None:
        return reason
    argv = [
        *_kubectl(host, kubectl),
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
    ]
    for path in paths:
        argv += ["-f", str(host.path(path))]
    try:
        result = host.run(argv, check=False, timeout=timeout)
    except CommandTimeoutError:
        return f"kubectl apply timed out after {timeout:g}s"
    if not result.ok:
        logger.warning("kubectl apply failed: %s", result.stderr[-500:])
        return f"kubectl apply failed: {_failure(result)}"
    host.ensure_directory(STATE_DIR, 0o755)
    host.write_file(f"{STATE_DIR}/applied-manifests.sha256", digest + "\n", mode=0o644)
    return None


def delete_nodes(host: Host, kubectl: str, names: Iterable[str]) -> dict[str, str]:
    """Delete these Node objects as the admin; return the ones not deleted, with why.

    ``--ignore-not-found`` makes it idempotent: a Node already gone counts as deleted.
    """
    from kaji.host import CommandTimeoutError

    names = sorted(names)
    if not names:
        return {}
    if (reason := api_ready(host, kubectl)) is not None:
        return dict.fromkeys(names, reason)
    left: dict[str, str] = {}
    for name in names:
        argv = [*_kubectl(host, kubectl), "delete", "node", name, "--ignore-not-found"]
        try:
            result = host.run(argv, check=False, timeout=30)
        except CommandTimeoutError:
            left[name] = "kubectl delete node timed out"
            continue
        if result.ok:
            logger.info("deleted the Node %s of a departed worker", name)
        else:
            left[name] = f"kubectl delete node failed: {_failure(result)}"
    return left


# --------------------------------------------------------------------------- admin kubeconfig


def admin_kubeconfig(host: Host, server: str) -> str:
    """An admin kubeconfig for ``server`` with this unit's admin certificate and key.

    Raises:
        FileNotFoundError: the admin certificate or CA is not installed yet.
    """
    from kaji.kubeconfig import render_kubeconfig

    ca = host.read_text(f"{PKI_DIR}/ca.crt")
    cert = host.read_text(f"{PKI_DIR}/admin.crt")
    key = host.read_text(f"{PKI_DIR}/admin.key")
    if not (ca and cert and key):
        raise FileNotFoundError("the admin certificate is not installed yet")
    return render_kubeconfig(
        server=server,
        ca_cert_pem=ca,
        client_cert_pem=cert,
        client_key_pem=key,
        user="kubernetes-admin",
        cluster=CLUSTER_NAME,
    )

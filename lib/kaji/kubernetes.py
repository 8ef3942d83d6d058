"""Kubernetes knowledge the kaji charms share: versions, flags, networks, images, releases.

Pure data and pure functions (stdlib only, cheap to import). Used by the control-plane charm
(kube-apiserver, kube-controller-manager, kube-scheduler) and the worker charm (kubelet,
kube-proxy).

Flag knowledge
--------------
``known_flags(component, version)`` is the set of command-line flags kaji knows to exist for a
component at a Kubernetes minor version; ``removed_flags`` those known to be gone. Source: the
command-line tools reference of each release, recorded per component in ``FLAG_REFERENCE``
(``flag_reference_url(component, version)`` gives the page of a given minor release, e.g.
https://v1-32.docs.kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/).
Every flag a kaji charm renders must be in ``known_flags`` (the charms' tests check that);
operator-supplied ``*-extra-args`` are refused when they name a flag known to be removed, and
otherwise passed through (the known sets are not exhaustive: a newer flag may be used).
"""

from __future__ import annotations

import platform
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kaji.lazy import lazy_import

if TYPE_CHECKING:
    import ipaddress
    from ipaddress import IPv4Network, IPv6Network
else:
    ipaddress = lazy_import("ipaddress")  # a no-op hook never parses a network

#: Kubernetes minor versions kaji supports, oldest first.
SUPPORTED_MINORS: tuple[tuple[int, int], ...] = ((1, 30), (1, 31), (1, 32), (1, 33))
DEFAULT_VERSION = "1.32.3"
DEFAULT_SERVICE_CIDR = "10.152.183.0/24"
DEFAULT_POD_CIDR = "10.1.0.0/16"
DEFAULT_DNS_DOMAIN = "cluster.local"
DEFAULT_IMAGE_REGISTRY = "registry.k8s.io"
#: Where upstream publishes release tarballs and their ``.sha256`` files.
DEFAULT_RELEASE_MIRROR = "https://dl.k8s.io"
APISERVER_PORT = 6443
#: The cluster DNS service is this host index of the service CIDR (10.152.183.10).
DNS_SERVICE_INDEX = 10
PAUSE_IMAGE_TAG = "3.10"
KUBELET_CONFIG_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_CONFIG_API = "kubeproxy.config.k8s.io/v1alpha1"
KUBE_SCHEDULER_CONFIG_API = "kubescheduler.config.k8s.io/v1"

#: CoreDNS image tag kubeadm ships with each minor release (kubeadm constants.CoreDNSVersion).
COREDNS_VERSIONS: dict[tuple[int, int], str] = {
    (1, 30): "v1.11.1",
    (1, 31): "v1.11.3",
    (1, 32): "v1.11.3",
    (1, 33): "v1.12.0",
}

Component = Literal[
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"
]
COMPONENTS: tuple[Component, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)

#: Binaries in the upstream server tarball (``kubernetes/server/bin/``) the control plane uses.
SERVER_BINARIES: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
)
#: Binaries in the upstream node tarball (``kubernetes/node/bin/``) a worker uses.
NODE_BINARIES: tuple[str, ...] = ("kubelet", "kube-proxy", "kubectl")
#: Leading path components of both tarballs (``kubernetes/{server,node}/bin/``).
TARBALL_STRIP_COMPONENTS = 3

_VERSION = re.compile(r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_FLAG_NAME = re.compile(r"[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The registry part of an image reference, after the distribution/reference grammar: a domain
# (its components may hold upper case), an optional port, then lowercase path components.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = re.compile(
    rf"(?P<host>{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*)(?::(?P<port>[0-9]{{1,5}}))?"
    rf"(?:/{_PATH_COMPONENT})*"
)
#: Longest registry prefix accepted: every image name under it (``<registry>/coredns/coredns``)
#: stays within the 255 characters the image reference grammar allows for a name.
MAX_IMAGE_REGISTRY_LENGTH = 200


class UnsupportedVersionError(ValueError):
    """A Kubernetes version that is malformed or outside ``SUPPORTED_MINORS``."""


class ExtraArgsError(ValueError):
    """A malformed ``*-extra-args`` value, or one naming a flag that no longer exists."""


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True, order=True)
class KubernetesVersion:
    """A Kubernetes release ``major.minor.patch``."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> KubernetesVersion:
        """Parse ``1.32.3`` (a leading ``v`` is accepted); raise UnsupportedVersionError."""
        match = _VERSION.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise UnsupportedVersionError(f"{text!r} is not a version like 1.32.3")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def minor_version(self) -> tuple[int, int]:
        """``(major, minor)``, the key of every per-release table."""
        return (self.major, self.minor)

    @property
    def tag(self) -> str:
        """The release tag, ``v1.32.3``."""
        return f"v{self}"


def supported_versions() -> tuple[str, ...]:
    """The supported minor versions as text, oldest first: ``("1.30", ..., "1.33")``."""
    return tuple(f"{a}.{b}" for a, b in SUPPORTED_MINORS)


def check_version(text: str) -> KubernetesVersion:
    """Parse a version and check its minor release is supported.

    Raises:
        UnsupportedVersionError: malformed, or not in ``SUPPORTED_MINORS`` (the message lists
            the supported ones).
    """
    version = KubernetesVersion.parse(text)
    if version.minor_version not in SUPPORTED_MINORS:
        raise UnsupportedVersionError(
            f"{version} is not supported (supported: {', '.join(supported_versions())})"
        )
    return version


def _as_version(version: KubernetesVersion | str) -> KubernetesVersion:
    return version if isinstance(version, KubernetesVersion) else check_version(version)


# --------------------------------------------------------------------------- flags

#: The command-line reference page of each component (current release; per-release pages are
#: under https://v1-NN.docs.kubernetes.io/, see ``flag_reference_url``).
FLAG_REFERENCE: dict[Component, str] = {
    c: f"https://kubernetes.io/docs/reference/command-line-tools-reference/{c}/"
    for c in COMPONENTS
}

# Flags shared by every component (klog/logging, feature gates, --help/--version).
_COMMON = """
    feature-gates help log-flush-frequency logging-format v version vmodule
"""
# The generic secure serving / delegated authn-authz flags of the control-plane daemons.
_SERVING = """
    allow-metric-labels authentication-kubeconfig authentication-skip-lookup
    authentication-token-webhook-cache-ttl authentication-tolerate-lookup-failure
    authorization-always-allow-paths authorization-kubeconfig
    authorization-webhook-cache-authorized-ttl authorization-webhook-cache-unauthorized-ttl
    bind-address cert-dir client-ca-file contention-profiling disabled-metrics
    http2-max-streams-per-connection kube-api-burst kube-api-content-type kube-api-qps
    kubeconfig leader-elect leader-elect-lease-duration leader-elect-renew-deadline
    leader-elect-resource-lock leader-elect-resource-name leader-elect-resource-namespace
    leader-elect-retry-period master permit-address-sharing permit-port-sharing profiling
    requestheader-allowed-names requestheader-client-ca-file requestheader-extra-headers-prefix
    requestheader-group-headers requestheader-username-headers secure-port
    show-hidden-metrics-for-version tls-cert-file tls-cipher-suites tls-min-version
    tls-private-key-file tls-sni-cert-key
"""

_KNOWN: dict[Component, str] = {
    # https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/
    "kube-apiserver": """
    admission-control-config-file advertise-address aggregator-reject-forwarding-redirect
    allow-metric-labels allow-metric-labels-manifest allow-privileged anonymous-auth
    api-audiences apiserver-count
    audit-log-batch-buffer-size audit-log-batch-max-size audit-log-batch-max-wait
    audit-log-batch-throttle-burst audit-log-batch-throttle-enable audit-log-batch-throttle-qps
    audit-log-compress audit-log-format audit-log-maxage audit-log-maxbackup audit-log-maxsize
    audit-log-mode audit-log-path audit-log-truncate-enabled audit-log-truncate-max-batch-size
    audit-log-truncate-max-event-size audit-log-version audit-policy-file
    audit-webhook-batch-buffer-size audit-webhook-batch-max-size audit-webhook-batch-max-wait
    audit-webhook-batch-throttle-burst audit-webhook-batch-throttle-enable
    audit-webhook-batch-throttle-qps audit-webhook-config-file audit-webhook-initial-backoff
    audit-webhook-mode audit-webhook-truncate-enabled audit-webhook-truncate-max-batch-size
    audit-webhook-truncate-max-event-size audit-webhook-version
    authentication-config authentication-token-webhook-cache-ttl
    authentication-token-webhook-config-file authentication-token-webhook-version
    authorization-config authorization-mode authorization-policy-file
    authorization-webhook-cache-authorized-ttl authorization-webhook-cache-unauthorized-ttl
    authorization-webhook-config-file authorization-webhook-version
    bind-address cert-dir client-ca-file cloud-config cloud-provider contention-profiling
    cors-allowed-origins default-not-ready-toleration-seconds
    default-unreachable-toleration-seconds default-watch-cache-size delete-collection-workers
    disable-admission-plugins disabled-metrics egress-selector-config-file
    enable-admission-plugins enable-aggregator-routing enable-bootstrap-token-auth
    enable-garbage-collector enable-priority-and-fairness encryption-provider-config
    encryption-provider-config-automatic-reload endpoint-reconciler-type
    etcd-cafile etcd-certfile etcd-compaction-interval etcd-count-metric-poll-period
    etcd-db-metric-poll-interval etcd-healthcheck-timeout etcd-keyfile etcd-prefix
    etcd-readycheck-timeout etcd-servers etcd-servers-overrides event-ttl external-hostname
    goaway-chance http2-max-streams-per-connection
    kubelet-certificate-authority kubelet-client-certificate kubelet-client-key
    kubelet-preferred-address-types kubelet-timeout kubernetes-service-node-port
    lease-reuse-duration-seconds livez-grace-period max-connection-bytes-per-sec
    max-mutating-requests-inflight max-requests-inflight min-request-timeout
    oidc-ca-file oidc-client-id oidc-groups-claim oidc-groups-prefix oidc-issuer-url
    oidc-required-claim oidc-signing-algs oidc-username-claim oidc-username-prefix
    permit-address-sharing permit-port-sharing profiling proxy-client-cert-file
    proxy-client-key-file request-timeout requestheader-allowed-names
    requestheader-client-ca-file requestheader-extra-headers-prefix requestheader-group-headers
    requestheader-username-headers runtime-config secure-port
    service-account-extend-token-expiration service-account-issuer service-account-jwks-uri
    service-account-key-file service-account-lookup service-account-max-token-expiration
    service-account-signing-key-file service-cluster-ip-range service-node-port-range
    show-hidden-metrics-for-version shutdown-delay-duration shutdown-send-retry-after
    shutdown-watch-termination-grace-period storage-backend storage-media-type
    strict-transport-security-directives tls-cert-file tls-cipher-suites tls-min-version
    tls-private-key-file tls-sni-cert-key token-auth-file tracing-config-file watch-cache
    watch-cache-sizes
    """,
    # https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/
    "kube-controller-manager": _SERVING
    + """
    allocate-node-cidrs attach-detach-reconcile-sync-period cidr-allocator-type cloud-config
    cloud-provider cluster-cidr cluster-name cluster-signing-cert-file cluster-signing-duration
    cluster-signing-key-file cluster-signing-kube-apiserver-client-cert-file
    cluster-signing-kube-apiserver-client-key-file cluster-signing-kubelet-client-cert-file
    cluster-signing-kubelet-client-key-file cluster-signing-kubelet-serving-cert-file
    cluster-signing-kubelet-serving-key-file cluster-signing-legacy-unknown-cert-file
    cluster-signing-legacy-unknown-key-file concurrent-deployment-syncs
    concurrent-endpoint-syncs concurrent-gc-syncs concurrent-namespace-syncs
    concurrent-rc-syncs concurrent-replicaset-syncs concurrent-service-syncs
    concurrent-serviceaccount-token-syncs concurrent-statefulset-syncs configure-cloud-routes
    controller-start-interval controllers disable-attach-detach-reconcile-sync
    enable-dynamic-provisioning enable-garbage-collector enable-hostpath-provisioner
    flex-volume-plugin-dir horizontal-pod-autoscaler-cpu-initialization-period
    horizontal-pod-autoscaler-downscale-stabilization
    horizontal-pod-autoscaler-initial-readiness-delay horizontal-pod-autoscaler-sync-period
    horizontal-pod-autoscaler-tolerance large-cluster-size-threshold min-resync-period
    node-cidr-mask-size node-cidr-mask-size-ipv4 node-cidr-mask-size-ipv6 node-eviction-rate
    node-monitor-grace-period node-monitor-period node-startup-grace-period
    pv-recycler-increment-timeout-nfs pv-recycler-minimum-timeout-hostpath
    pv-recycler-minimum-timeout-nfs pv-recycler-pod-template-filepath-hostpath
    pv-recycler-pod-template-filepath-nfs pv-recycler-timeout-increment-hostpath root-ca-file
    route-reconciliation-period secondary-node-eviction-rate service-account-private-key-file
    service-cluster-ip-range terminated-pod-gc-threshold unhealthy-zone-threshold
    use-service-account-credentials
    """,
    # https://kubernetes.io/docs/reference/command-line-tools-reference/kube-scheduler/
    "kube-scheduler": _SERVING
    + """
    config pod-max-in-unschedulable-pods-duration write-config-to
    """,
    # https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
    "kubelet": """
    address allowed-unsafe-sysctls anonymous-auth authentication-token-webhook
    authentication-token-webhook-cache-ttl authorization-mode
    authorization-webhook-cache-authorized-ttl authorization-webhook-cache-unauthorized-ttl
    boot-id-file bootstrap-kubeconfig cert-dir cgroup-driver cgroup-root cgroups-per-qos
    client-ca-file cloud-config cloud-provider cluster-dns cluster-domain config config-dir
    container-log-max-files container-log-max-size container-runtime-endpoint
    contention-profiling cpu-cfs-quota cpu-cfs-quota-period cpu-manager-policy
    cpu-manager-policy-options cpu-manager-reconcile-period enable-controller-attach-detach
    enable-debugging-handlers enable-server enforce-node-allocatable event-burst event-qps
    eviction-hard eviction-max-pod-grace-period eviction-minimum-reclaim
    eviction-pressure-transition-period eviction-soft eviction-soft-grace-period
    exit-on-lock-contention fail-swap-on file-check-frequency hairpin-mode
    healthz-bind-address healthz-port hostname-override http-check-frequency
    image-credential-provider-bin-dir image-credential-provider-config
    image-gc-high-threshold image-gc-low-threshold image-service-endpoint
    kernel-memcg-notification kube-api-burst kube-api-content-type kube-api-qps kube-reserved
    kube-reserved-cgroup kubeconfig kubelet-cgroups local-storage-capacity-isolation lock-file
    make-iptables-util-chains manifest-url max-open-files max-pods maximum-dead-containers
    maximum-dead-containers-per-container memory-manager-policy minimum-container-ttl-duration
    minimum-image-ttl-duration node-ip node-labels node-status-max-images
    node-status-update-frequency oom-score-adj pod-cidr pod-infra-container-image
    pod-manifest-path pod-max-pids pods-per-core port protect-kernel-defaults provider-id
    qos-reserved read-only-port register-node register-schedulable register-with-taints
    registry-burst registry-qps reserved-cpus reserved-memory resolv-conf root-dir
    rotate-certificates rotate-server-certificates runonce runtime-cgroups
    runtime-request-timeout seccomp-default serialize-image-pulls
    streaming-connection-idle-timeout sync-frequency system-cgroups system-reserved
    system-reserved-cgroup tls-cert-file tls-cipher-suites tls-min-version tls-private-key-file
    topology-manager-policy topology-manager-policy-options topology-manager-scope
    volume-plugin-dir volume-stats-agg-period
    """,
    # https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/
    "kube-proxy": """
    bind-address bind-address-hard-fail cleanup cluster-cidr config config-sync-period
    conntrack-max-per-core conntrack-min conntrack-tcp-be-liberal
    conntrack-tcp-timeout-close-wait conntrack-tcp-timeout-established conntrack-udp-timeout
    conntrack-udp-timeout-stream detect-local-mode healthz-bind-address hostname-override
    init-only iptables-localhost-nodeports iptables-masquerade-bit iptables-min-sync-period
    iptables-sync-period ipvs-exclude-cidrs ipvs-min-sync-period ipvs-scheduler
    ipvs-strict-arp ipvs-sync-period ipvs-tcp-timeout ipvs-tcpfin-timeout ipvs-udp-timeout
    kube-api-burst kube-api-content-type kube-api-qps kubeconfig masquerade-all master
    metrics-bind-address nodeport-addresses oom-score-adj pod-bridge-interface
    pod-interface-name-prefix profiling proxy-mode show-hidden-metrics-for-version
    write-config-to
    """,
}

#: Flags known to be gone, with the first minor release without them. ``(1, 30)`` marks a flag
#: removed in or before 1.29, i.e. absent from every supported release.
_REMOVED: dict[Component, dict[str, tuple[int, int]]] = {
    "kube-apiserver": {
        "address": (1, 30),
        "azure-container-registry-config": (1, 30),
        "basic-auth-file": (1, 30),
        "enable-swagger-ui": (1, 30),
        "insecure-bind-address": (1, 30),
        "insecure-port": (1, 30),
        "kubelet-https": (1, 30),
        "port": (1, 30),
        "service-account-api-audiences": (1, 30),
    },
    "kube-controller-manager": {
        "address": (1, 30),
        "azure-container-registry-config": (1, 30),
        "enable-taint-manager": (1, 30),
        "experimental-cluster-signing-duration": (1, 30),
        "pod-eviction-timeout": (1, 30),
        "port": (1, 30),
    },
    "kube-scheduler": {
        "address": (1, 30),
        "policy-config-file": (1, 30),
        "policy-configmap": (1, 30),
        "policy-configmap-namespace": (1, 30),
        "port": (1, 30),
        "use-legacy-policy-config": (1, 30),
    },
    "kubelet": {
        "azure-container-registry-config": (1, 30),
        "cni-bin-dir": (1, 30),
        "cni-cache-dir": (1, 30),
        "cni-conf-dir": (1, 30),
        "container-runtime": (1, 30),
        "docker-endpoint": (1, 30),
        "image-pull-progress-deadline": (1, 30),
        "keep-terminated-pod-volumes": (1, 31),
        "network-plugin": (1, 30),
        "network-plugin-mtu": (1, 30),
    },
    "kube-proxy": {
        "resource-container": (1, 30),
    },
}


def _component(component: str) -> Component:
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r} (known: {', '.join(COMPONENTS)})")
    return component


def flag_reference_url(component: str, version: KubernetesVersion | str) -> str:
    """The command-line reference page of ``component`` for the minor release of ``version``."""
    v = _as_version(version)
    return (
        f"https://v{v.major}-{v.minor}.docs.kubernetes.io/docs/reference/"
        f"command-line-tools-reference/{_component(component)}/"
    )


def known_flags(component: str, version: KubernetesVersion | str) -> frozenset[str]:
    """Flags (without ``--``) known to exist for ``component`` at ``version``'s minor release."""
    c = _component(component)
    v = _as_version(version)
    names = set((_COMMON + _KNOWN[c]).split())
    return frozenset(n for n in names if _REMOVED[c].get(n, (999, 0)) > v.minor_version)


def removed_flags(component: str, version: KubernetesVersion | str) -> frozenset[str]:
    """Flags (without ``--``) known to no longer exist for ``component`` at ``version``."""
    c = _component(component)
    v = _as_version(version)
    return frozenset(n for n, gone in _REMOVED[c].items() if gone <= v.minor_version)


def unknown_flags(
    component: str, version: KubernetesVersion | str, names: Iterable[str]
) -> list[str]:
    """The names (``--`` optional) not in ``known_flags``, sorted and deduplicated."""
    known = known_flags(component, version)
    return sorted({n.lstrip("-") for n in names} - known)


def argv_flags(argv: Iterable[str]) -> list[str]:
    """The flag names (without ``--``) in an argv of ``--name=value`` / ``--name`` items."""
    names = []
    for item in argv:
        if item.startswith("--"):
            names.append(item[2:].split("=", 1)[0])
    return names


# --------------------------------------------------------------------------- extra args


def parse_extra_args(text: str) -> dict[str, str]:
    """Parse an ``*-extra-args`` option: space-separated ``name=value`` (or bare ``name``).

    Names may carry a leading ``--``; a bare name means ``true``; shell-style quotes allow
    spaces in a value (``'a=x y'``). Order is kept.

    Raises:
        ExtraArgsError: unbalanced quotes, an empty or invalid flag name, a value with control
            characters, or the same flag twice.
    """
    try:
        words = shlex.split(text or "", comments=False, posix=True)
    except ValueError as exc:
        raise ExtraArgsError(f"cannot parse {text!r}: {exc}") from None
    flags: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        stripped = name[2:] if name.startswith("--") else name
        if not _FLAG_NAME.fullmatch(stripped):
            raise ExtraArgsError(f"{word!r} is not name=value with a flag name like 'v' or 'v=2'")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ExtraArgsError(f"value of {stripped!r} contains control characters")
        if stripped in flags:
            raise ExtraArgsError(f"flag {stripped!r} is given twice")
        flags[stripped] = value if sep else "true"
    return flags


def check_extra_args(
    component: str, version: KubernetesVersion | str, text: str
) -> dict[str, str]:
    """``parse_extra_args`` plus: refuse any flag known to be removed at ``version``."""
    flags = parse_extra_args(text)
    gone = sorted(set(flags) & removed_flags(component, version))
    if gone:
        v = _as_version(version)
        raise ExtraArgsError(
            f"{', '.join('--' + g for g in gone)} no longer exist in {component} "
            f"{v.major}.{v.minor}"
        )
    return flags


def merge_args(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``extra`` merged in: extra values win, new flags are appended in order."""
    merged = dict(base)
    merged.update(extra)
    return merged


def render_args(flags: Mapping[str, str]) -> list[str]:
    """``{"v": "2"}`` -> ``["--v=2"]``, in the mapping's order."""
    return [f"--{name}={value}" for name, value in flags.items()]


# --------------------------------------------------------------------------- networks


def parse_cidr(text: str) -> IPv4Network | IPv6Network:
    """A network from ``10.152.183.0/24``; host bits set or a missing prefix is an error.

    Raises:
        ValueError: not a CIDR, host bits set, or a network with fewer than 4 addresses.
    """
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"{text!r} is not a CIDR like 10.152.183.0/24")
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid CIDR: {exc}") from None
    if network.num_addresses < 4:
        raise ValueError(f"{text!r} is too small")
    return network


def cidrs_overlap(a: str, b: str) -> bool:
    """True if the two CIDRs share any address (always False across IP families)."""
    na, nb = parse_cidr(a), parse_cidr(b)
    return na.version == nb.version and na.overlaps(nb)


def service_ip(cidr: str, n: int) -> str:
    """The ``n``-th address of ``cidr`` (``n`` >= 1, not the broadcast), e.g. 10.152.183.1.

    Raises:
        ValueError: a bad CIDR or ``n`` outside the usable host range.
    """
    network = parse_cidr(cidr)
    last = network.num_addresses - (2 if network.version == 4 else 1)
    if not 1 <= n <= last:
        raise ValueError(f"{cidr} has no host address number {n}")
    return str(network.network_address + n)


def apiserver_service_ip(cidr: str) -> str:
    """The ``kubernetes`` service address: the first host of the service CIDR."""
    return service_ip(cidr, 1)


def dns_address(cidr: str) -> str:
    """The cluster DNS service address: host ``DNS_SERVICE_INDEX`` (10) of the service CIDR."""
    return service_ip(cidr, DNS_SERVICE_INDEX)


def check_dns_domain(domain: str) -> str:
    """Check a cluster domain (``cluster.local``): lowercase DNS-1123 labels, no trailing dot.

    Raises:
        ValueError: not a valid domain.
    """
    if not isinstance(domain, str) or not domain or len(domain) > 253:
        raise ValueError(f"{domain!r} is not a DNS domain")
    if not all(_DNS_LABEL.fullmatch(label) for label in domain.split(".")):
        raise ValueError(f"{domain!r} is not a lowercase DNS domain like cluster.local")
    return domain


def node_name(hostname: str) -> str:
    """The Kubernetes node name of a host: its hostname, lowercased; DNS-1123 checked.

    Raises:
        ValueError: the lowercased hostname is not a DNS-1123 subdomain.
    """
    return check_dns_domain(hostname.strip().lower().rstrip("."))


def api_url(address: str, port: int = APISERVER_PORT) -> str:
    """``https://ADDR:PORT`` for an IPv4/IPv6 address or hostname (IPv6 in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


# --------------------------------------------------------------------------- images


def check_image_registry(registry: str) -> str:
    """Check a registry prefix ``host[:port][/path]`` (no scheme, no trailing slash).

    The one definition of a valid registry: the control plane's ``image-registry`` option and
    the kube-control contract (``kaji.interfaces.kube_control``) both use it. The form is the
    registry part of an image reference (distribution/reference grammar): the host's DNS
    components may hold upper case (DNS is case-insensitive), the path must be lowercase, the
    port is 1-65535, and the whole is at most ``MAX_IMAGE_REGISTRY_LENGTH`` characters.

    Raises:
        ValueError: not of that form.
    """
    if not isinstance(registry, str):
        raise ValueError(f"{registry!r} is not a registry like registry.k8s.io or host:5000/path")
    if len(registry) > MAX_IMAGE_REGISTRY_LENGTH:
        raise ValueError(
            f"{registry[:60]!r}... is not a registry: over {MAX_IMAGE_REGISTRY_LENGTH} characters"
        )
    match = _REGISTRY.fullmatch(registry)
    if match is None:
        raise ValueError(
            f"{registry[:100]!r} is not a registry like registry.k8s.io or host:5000/path"
            " (no scheme, no trailing slash, lowercase path)"
        )
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"{registry[:100]!r} is not a registry: port {port} is out of range")
    return registry


def pause_image(registry: str = DEFAULT_IMAGE_REGISTRY) -> str:
    """The pod sandbox image, ``<registry>/pause:3.10``."""
    return f"{check_image_registry(registry)}/pause:{PAUSE_IMAGE_TAG}"


def coredns_image(
    registry: str = DEFAULT_IMAGE_REGISTRY, version: KubernetesVersion | str = DEFAULT_VERSION
) -> str:
    """The CoreDNS image for a release, ``<registry>/coredns/coredns:v1.11.3``."""
    tag = COREDNS_VERSIONS[_as_version(version).minor_version]
    return f"{check_image_registry(registry)}/coredns/coredns:{tag}"


# --------------------------------------------------------------------------- releases


def machine_arch(machine: str | None = None) -> str:
    """The Kubernetes architecture name of this machine (``amd64``, ``arm64``, ...)."""
    raw = (machine or platform.machine()).lower()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
    }.get(raw, raw)


def _check_mirror(mirror: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", mirror or ""):
        raise ValueError(f"{mirror!r} is not an http(s) URL")
    return mirror.rstrip("/")


def server_tarball_url(
    version: KubernetesVersion | str, arch: str, mirror: str = DEFAULT_RELEASE_MIRROR
) -> str:
    """``<mirror>/v1.32.3/kubernetes-server-linux-<arch>.tar.gz`` (holds ``SERVER_BINARIES``)."""
    v = _as_version(version)
    return f"{_check_mirror(mirror)}/{v.tag}/kubernetes-server-linux-{arch}.tar.gz"


def node_tarball_url(
    version: KubernetesVersion | str, arch: str, mirror: str = DEFAULT_RELEASE_MIRROR
) -> str:
    """``<mirror>/v1.32.3/kubernetes-node-linux-<arch>.tar.gz`` (holds ``NODE_BINARIES``)."""
    v = _as_version(version)
    return f"{_check_mirror(mirror)}/{v.tag}/kubernetes-node-linux-{arch}.tar.gz"


def checksum_url(url: str) -> str:
    """Where upstream publishes the SHA-256 of a release file: ``<url>.sha256``."""
    return f"{url}.sha256"


def parse_sha256_file(text: str) -> str:
    """The hex digest in a ``.sha256`` file (``<hex>`` or ``<hex>  <name>``), lowercased.

    Raises:
        ValueError: no 64-hex-digit digest first in the file.
    """
    words = (text or "").split()
    digest = words[0].lower() if words else ""
    if not _SHA256.fullmatch(digest):
        raise ValueError("checksum file does not start with a SHA-256 hex digest")
    return digest

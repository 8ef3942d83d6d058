"""The three control-plane services: their flags, specs and restarts.

No ops here: the charm passes plain data and a :class:`kaji.host.Host`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kaji import kubernetes as k8s
from kaji.host import ServiceChange, ServiceSpec

from .literals import AUDIT_LOG, CLUSTER_NAME, ETCD_PKI_DIR, KUBE_DIR, PKI_DIR, SERVICES

if TYPE_CHECKING:
    from kaji.host import Host

    from .config import ControlPlaneConfig


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this unit's services listen and find their binaries."""

    address: str
    bind_address: str
    loopback: str
    binaries: Mapping[str, str]  # binary name -> real path


def apiserver_flags(
    host: Host, settings: ControlPlaneConfig, place: Placement, etcd_urls: Iterable[str]
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
    host: Host, settings: ControlPlaneConfig, place: Placement, pod_cidr: str | None
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
    settings: ControlPlaneConfig,
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


def run_services(
    host: Host,
    settings: ControlPlaneConfig,
    place: Placement,
    etcd_urls: Iterable[str],
    pod_cidr: str | None,
) -> dict[str, ServiceChange]:
    """Ensure the three services with their specs (started, or restarted on a change)."""
    return ensure_services(host, service_specs(host, settings, place, etcd_urls, pod_cidr))

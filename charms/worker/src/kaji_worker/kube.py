"""kubelet and kube-proxy: their config files, kubeconfigs and services."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kaji import kubernetes
from kaji.host import ServiceSpec
from kaji.kubeconfig import render_kubeconfig as _render_kubeconfig
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    import yaml

    from kaji.host import Host
    from kaji_worker.config import Taint
else:
    yaml = lazy_import("yaml")

KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
PKI_DIR = "/etc/kubernetes/pki"
CA_CERT = f"{PKI_DIR}/ca.crt"
NODE_NAME = "node"  # node.key, node.csr, node.crt under PKI_DIR
NODE_KEY = f"{PKI_DIR}/{NODE_NAME}.key"
NODE_CERT = f"{PKI_DIR}/{NODE_NAME}.crt"
KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"
KUBELET_CONFIG = "/etc/kubernetes/kubelet-config.yaml"
PROXY_KUBECONFIG = "/etc/kubernetes/kube-proxy.conf"
PROXY_CONFIG = "/etc/kubernetes/kube-proxy-config.yaml"
KUBELET_ROOT = "/var/lib/kubelet"
HEADER = "# Managed by kaji (worker charm): local changes are overwritten.\n"


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in; nested mappings merge, anything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _yaml(data: Mapping[str, Any]) -> str:
    return HEADER + yaml.safe_dump(dict(data), sort_keys=True, default_flow_style=False)


def render_kubeconfig(
    *,
    server: str,
    ca_cert_pem: str,
    cert_pem: str,
    key_pem: str,
    user: str,
    tls_server_name: str | None = None,
) -> str:
    """A kubeconfig (``kaji.kubeconfig``), naming the TLS server name to verify if given.

    ``tls_server_name`` is used when the server is the local balancer: the API server's
    certificate does not name a loopback address, but always names ``kubernetes``.
    """
    text = _render_kubeconfig(
        server=server,
        ca_cert_pem=ca_cert_pem,
        client_cert_pem=cert_pem,
        client_key_pem=key_pem,
        user=user,
    )
    if tls_server_name is None:
        return text
    config = json.loads(text)
    config["clusters"][0]["cluster"]["tls-server-name"] = tls_server_name
    return json.dumps(config, indent=2) + "\n"


def resolv_conf(host: Host) -> str:
    """The resolv.conf pods inherit: systemd-resolved's upstream file when present."""
    resolved = "/run/systemd/resolve/resolv.conf"
    return (
        str(host.path(resolved)) if host.exists(resolved) else str(host.path("/etc/resolv.conf"))
    )


def kubelet_config(
    host: Host,
    *,
    cluster_dns: str,
    cluster_domain: str,
    cgroup_driver: str,
    runtime_endpoint: str,
    taints: Sequence[Taint],
    extra: Mapping[str, Any],
) -> str:
    """The KubeletConfiguration: x509 client CA, webhook authn/authz, no anonymous access."""
    config: dict[str, Any] = {
        "apiVersion": kubernetes.KUBELET_CONFIG_API,
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": str(host.path(CA_CERT))},
        },
        "authorization": {
            "mode": "Webhook",
            "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
        },
        "cgroupDriver": cgroup_driver,
        "clusterDNS": [cluster_dns],
        "clusterDomain": cluster_domain,
        "containerRuntimeEndpoint": runtime_endpoint,
        "readOnlyPort": 0,
        "registerNode": True,
        "registerWithTaints": [t.as_config() for t in taints],
        "resolvConf": resolv_conf(host),
        # The node certificate comes over kube-control and is renewed by the charm; the kubelet
        # may also renew its client certificate through the CSR API (system:nodes may).
        "rotateCertificates": True,
        "serverTLSBootstrap": False,
        "tlsCertFile": str(host.path(NODE_CERT)),
        "tlsPrivateKeyFile": str(host.path(NODE_KEY)),
    }
    return _yaml(deep_merge(config, extra))


def kube_proxy_config(
    host: Host,
    *,
    node_name: str,
    cluster_cidr: str,
    mode: str,
    extra: Mapping[str, Any],
) -> str:
    """The KubeProxyConfiguration: cluster CIDR from the cni relation, mode from config."""
    config: dict[str, Any] = {
        "apiVersion": kubernetes.KUBE_PROXY_CONFIG_API,
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(host.path(PROXY_KUBECONFIG))},
        "clusterCIDR": cluster_cidr,
        "hostnameOverride": node_name,
        "mode": mode,
    }
    return _yaml(deep_merge(config, extra))


def kubelet_spec(
    host: Host,
    binary: str,
    *,
    node_name: str,
    node_ip: str,
    labels: Mapping[str, str],
) -> ServiceSpec:
    """The kubelet service; it restarts when its config, kubeconfig or certificate change."""
    argv = [
        binary,
        f"--config={host.path(KUBELET_CONFIG)}",
        f"--kubeconfig={host.path(KUBELET_KUBECONFIG)}",
        f"--root-dir={host.path(KUBELET_ROOT)}",
        f"--cert-dir={host.path(KUBELET_ROOT + '/pki')}",
        f"--hostname-override={node_name}",
        f"--node-ip={node_ip}",
    ]
    if labels:
        argv.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    watched = (KUBELET_CONFIG, KUBELET_KUBECONFIG, CA_CERT, NODE_CERT, NODE_KEY)
    return ServiceSpec(
        KUBELET,
        argv,
        description="Kubernetes node agent (kaji)",
        after=("containerd.service",),
        wants=("containerd.service",),
        watched_files=tuple(str(host.path(p)) for p in watched),
        restart_sec=10,
    )


def kube_proxy_spec(host: Host, binary: str) -> ServiceSpec:
    """The kube-proxy service; it restarts when its config or kubeconfig change."""
    return ServiceSpec(
        KUBE_PROXY,
        [binary, f"--config={host.path(PROXY_CONFIG)}"],
        description="Kubernetes network proxy (kaji)",
        after=("network-online.target",),
        wants=("network-online.target",),
        watched_files=(str(host.path(PROXY_CONFIG)), str(host.path(PROXY_KUBECONFIG))),
        restart_sec=5,
    )

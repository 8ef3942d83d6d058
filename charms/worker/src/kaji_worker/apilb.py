"""The local API load balancer: haproxy on the machine's loopback address, in TCP mode.

With several control-plane units, kubelet and kube-proxy talk to ``https://<loopback>:16443``
and haproxy spreads their connections over every kube-apiserver, health-checking each one.
TLS passes through untouched: clients still verify the API server's certificate (the
kubeconfigs name ``kubernetes``, a name in every API server certificate, as the TLS server
name). Endpoint changes rewrite the config and reload haproxy; nobody else restarts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kaji.host import ServiceSpec

if TYPE_CHECKING:
    from kaji.host import Host

SERVICE = "kaji-apiserver-lb"
CONFIG = "/etc/kaji/apiserver-lb.cfg"
PORT = 16443
#: The name kubeconfigs verify the API server certificate against when going through haproxy.
TLS_SERVER_NAME = "kubernetes"


def backend_address(endpoint: str) -> str:
    """``host:port`` of an ``https://`` API endpoint, as haproxy's ``server`` line wants it."""
    parts = urlsplit(endpoint)
    host = parts.hostname
    if parts.scheme != "https" or not host:
        raise ValueError(f"not an https endpoint: {endpoint!r}")
    port = parts.port or 6443
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"ipv6@{host}:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def frontend_url(host: Host) -> str:
    """The URL kubelet and kube-proxy use when the balancer is in place."""
    address = host.loopback_address
    bracketed = f"[{address}]" if ":" in address else address
    return f"https://{bracketed}:{PORT}"


def render_config(bind_address: str, endpoints: Sequence[str], *, port: int = PORT) -> str:
    """The haproxy config: one TCP frontend on ``bind_address``, every endpoint a backend.

    A server that fails two connection checks in a row (2 s apart) is taken out and its
    sessions are cut so clients reconnect elsewhere; a failed connection is retried on another
    server (``redispatch``), so a dead API server costs at most one retry.
    """
    if not endpoints:
        raise ValueError("the API balancer needs at least one endpoint")
    bind = f"[{bind_address}]" if ":" in bind_address else bind_address
    lines = [
        "# Managed by kaji (worker charm): local changes are overwritten.",
        "global",
        "  maxconn 2000",
        "",
        "defaults",
        "  mode tcp",
        "  option dontlognull",
        "  option redispatch",
        "  retries 3",
        "  timeout connect 5s",
        "  # API watches stay open for up to an hour without traffic.",
        "  timeout client 86400s",
        "  timeout server 86400s",
        "",
        "frontend kube-apiserver",
        f"  bind {bind}:{port}",
        "  default_backend kube-apiservers",
        "",
        "backend kube-apiservers",
        "  balance leastconn",
        "  default-server inter 2s fall 2 rise 2 on-marked-down shutdown-sessions",
    ]
    for index, endpoint in enumerate(sorted(set(endpoints))):
        lines.append(f"  server apiserver-{index} {backend_address(endpoint)} check")
    return "\n".join(lines) + "\n"


def service_spec(host: Host, haproxy: str) -> ServiceSpec:
    """The balancer service: haproxy in master-worker mode (SIGUSR2 reloads its config).

    The config file is not watched: a change reloads, it does not restart.
    """
    return ServiceSpec(
        SERVICE,
        [haproxy, "-Ws", "-f", str(host.path(CONFIG))],
        description="Local load balancer for the Kubernetes API (kaji)",
        type="notify",
        reload_signal="USR2",
        after=("network-online.target",),
        wants=("network-online.target",),
        restart_sec=2,
    )

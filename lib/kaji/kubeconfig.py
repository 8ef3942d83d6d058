"""Kubeconfig files for kaji's components and users (control plane and workers alike)."""

from __future__ import annotations

import base64
import json


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode()


def render_kubeconfig(
    *,
    server: str,
    ca_cert_pem: str,
    client_cert_pem: str,
    client_key_pem: str,
    user: str,
    cluster: str = "kaji",
) -> str:
    """Return a kubeconfig with one cluster, one user and one current context, data embedded.

    The output is JSON (a subset of YAML, which kubectl and every client library read), with
    keys in a fixed order, so the same inputs always give the same bytes and an unchanged
    kubeconfig is never rewritten.
    """
    if not server.startswith("https://"):
        raise ValueError(f"kubeconfig server must be an https URL, got {server!r}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": _b64(ca_cert_pem),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client_cert_pem),
                    "client-key-data": _b64(client_key_pem),
                },
            }
        ],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
        "current-context": f"{user}@{cluster}",
        "preferences": {},
    }
    return json.dumps(config, indent=2) + "\n"

"""The control plane's files: CA certificates, keys, encryption config, audit policy, kubeconfigs.

No ops here. Every write is idempotent (an unchanged file is not rewritten).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kaji.kubeconfig import render_kubeconfig

from .literals import AUDIT_LOG, CLUSTER_NAME, ETCD_PKI_DIR, KUBE_DIR, KUBECONFIG_USERS, PKI_DIR

if TYPE_CHECKING:
    from kaji.certs import KeyAndRequest
    from kaji.host import Host

    from .config import ControlPlaneConfig


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


def write_audit_policy(host: Host, settings: ControlPlaneConfig) -> None:
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


def admin_kubeconfig(host: Host, server: str) -> str:
    """An admin kubeconfig for ``server`` with this unit's admin certificate and key.

    Raises:
        FileNotFoundError: the admin certificate or CA is not installed yet.
    """
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

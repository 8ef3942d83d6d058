"""Paths, names, endpoints and labels of the control-plane charm (constants only).

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

from pathlib import Path

# Endpoints.
PEER = "cluster"
ETCD = "etcd"
CNI = "cni"
KUBE_CONTROL = "kube-control"
#: The optional server release tarball resource.
KUBERNETES_RESOURCE = "kubernetes"

KUBE_DIR = "/etc/kubernetes"
PKI_DIR = f"{KUBE_DIR}/pki"
ETCD_PKI_DIR = f"{PKI_DIR}/etcd"
MANIFEST_DIR = f"{KUBE_DIR}/manifests"
AUDIT_LOG = "/var/log/kubernetes/audit.log"
STATE_DIR = "/var/lib/kaji/control-plane"
#: The reconcile record (kaji.reconciler), in STATE_DIR.
RECONCILED_FILE = f"{STATE_DIR}/reconciled.json"
#: The digest of the manifests last applied, in STATE_DIR.
APPLIED_DIGEST_FILE = f"{STATE_DIR}/applied-manifests.sha256"
#: A full reconcile runs at least this often even when nothing changed.
FULL_RECONCILE_INTERVAL = 6 * 3600

BINARY_NAME = "kubernetes"
SERVICES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
CLUSTER_NAME = "kubernetes"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
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

#: kubectl's field manager for server-side apply: the owner of every field kaji sets.
FIELD_MANAGER = "kaji-control-plane"
#: Largest checksum file downloaded (bytes).
CHECKSUM_LIMIT = 4096

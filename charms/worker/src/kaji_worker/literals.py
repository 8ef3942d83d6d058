"""The worker's names and paths: endpoints, resources, state files, packages (constants only).

Each workload module keeps the paths of the files it renders (``containerd.CONFIG``,
``kube.KUBELET_CONFIG``, ``apilb.CONFIG``, ...); what the charm and the node as a whole use
lives here.
"""

from __future__ import annotations

# -- Juju ----------------------------------------------------------------------------------

#: The control plane (kube-control interface): cluster data, API endpoints, the node certificate.
KUBE_CONTROL = "kube-control"
#: The cni subordinate (kaji-cni interface): the pod network.
CNI = "cni"
#: Resources: containerd/runc/CNI plugins, and the upstream kubernetes-node tarball.
CONTAINERD_RESOURCE = "containerd"
KUBERNETES_NODE_RESOURCE = "kubernetes-node"

# -- state on the machine ------------------------------------------------------------------

STATE_DIR = "/var/lib/kaji/worker"
#: Packages the charm installed (purged on teardown).
STATE_FILE = f"{STATE_DIR}/state.json"
#: Services this sandbox cannot run (their binary is missing): recorded, never started.
RECORDED_STATE = f"{STATE_DIR}/recorded-services"
#: The last full reconcile (kaji.reconciler's record), for update-status's cheap path.
RECONCILED_FILE = f"{STATE_DIR}/reconciled.json"
#: A full reconcile runs at least this often even when nothing changed (seconds).
FULL_RECONCILE_INTERVAL = 6 * 3600
#: The sysctl and module-load drop-ins' name (kaji.kernel).
KERNEL_SETTINGS = "kaji-worker"

# -- the runtime ---------------------------------------------------------------------------

DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
RUNTIME_PACKAGES = ("containerd", "runc", "containernetworking-plugins")
LB_PACKAGES = ("haproxy",)
#: Distribution paths of the packaged binaries (Debian and Ubuntu).
PACKAGED = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "haproxy": "/usr/sbin/haproxy",
}
PACKAGED_CNI_DIR = "/usr/lib/cni"
#: Files the ``containerd`` resource tarball must hold.
CONTAINERD_RESOURCE_FILES = (
    "bin/containerd",
    "bin/containerd-shim-runc-v2",
    "bin/runc",
    "cni/loopback",
)
KUBE_BINARIES = ("kubelet", "kube-proxy")

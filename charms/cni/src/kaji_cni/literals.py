"""kaji-cni's constants: endpoints, machine paths, device and chain names."""

from __future__ import annotations

#: The container-scoped relation to the principal (control-plane or worker).
PRINCIPAL = "cni"
#: The peer relation: each node's claim, the leader's allocation table.
PEERS = "network"

BACKENDS = ("host-gw", "vxlan")
NETWORK_NAME = "kaji"
CNI_CONF_DIR = "/etc/cni/net.d"
CONFLIST_NAME = "10-kaji.conflist"
STATE_PATH = "/var/lib/kaji/cni/dataplane.json"
SYSCTL_PATH = "/etc/sysctl.d/60-kaji-cni.conf"
BRIDGE = "kaji0"
VXLAN_DEVICE = "kaji.vxlan"
#: Routes this charm owns carry this routing protocol number, so it never touches others'.
ROUTE_PROTOCOL = "107"
MASQ_CHAIN = "KAJI-POD-MASQ"
MASQ_COMMENT = "kaji-cni: masquerade pod traffic leaving the cluster"
#: Bytes VXLAN adds to each packet: outer Ethernet is not counted; IP + UDP + VXLAN headers.
VXLAN_OVERHEAD = {4: 50, 6: 70}

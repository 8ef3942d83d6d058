"""The CNI network configuration of one node: bridge + host-local + portmap + loopback.

No ops here: the pod MTU and the conflist JSON, from the validated config and the node's subnet.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from kaji_cni.config import CniConfig
from kaji_cni.literals import BRIDGE, NETWORK_NAME, VXLAN_OVERHEAD


def pod_mtu(config: CniConfig, underlay: str) -> int:
    """The MTU of pod interfaces: the underlay MTU, less the VXLAN overhead with vxlan."""
    if config.backend != "vxlan":
        return config.mtu
    return config.mtu - VXLAN_OVERHEAD[ipaddress.ip_address(underlay).version]


def render_conflist(
    config: CniConfig, subnet: str, *, mtu: int, ipam_data_dir: str | None = None
) -> str:
    """The CNI network configuration list for a node whose pods live in `subnet`.

    `ipam_data_dir` overrides host-local's state directory (tests point it at a temp dir).
    """
    net = ipaddress.ip_network(subnet)
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": net.compressed, "gateway": str(net.network_address + 1)}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    if ipam_data_dir is not None:
        ipam["dataDir"] = ipam_data_dir
    conflist = {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "mtu": mtu,
                "ipam": ipam,
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "loopback"},
        ],
    }
    return json.dumps(conflist, indent=2, sort_keys=True) + "\n"

"""The CNI conflist on its own: its plugins, and the pod MTU each backend gives it."""

from __future__ import annotations

import json

from kaji_cni import literals
from kaji_cni.config import CniConfig
from kaji_cni.conflist import pod_mtu, render_conflist

SETTINGS = CniConfig.from_options({"backend": "host-gw"})


def test_conflist_is_bridge_host_local_portmap_loopback() -> None:
    text = render_conflist(SETTINGS, "10.1.3.0/24", mtu=1450, ipam_data_dir="/tmp/x")
    conflist = json.loads(text)
    assert conflist["name"] == "kaji"
    assert conflist["cniVersion"] == "1.0.0"
    bridge, portmap, loopback = conflist["plugins"]
    assert bridge["bridge"] == literals.BRIDGE
    assert bridge["isGateway"] is True
    assert bridge["ipMasq"] is False
    assert bridge["mtu"] == 1450
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.1.3.0/24", "gateway": "10.1.3.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/tmp/x",
    }
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    assert loopback == {"type": "loopback"}
    assert text == render_conflist(SETTINGS, "10.1.3.0/24", mtu=1450, ipam_data_dir="/tmp/x")


def test_vxlan_mtu_overhead_depends_on_the_underlay_family() -> None:
    vxlan = CniConfig.from_options({"backend": "vxlan", "mtu": 1500})
    assert pod_mtu(vxlan, "192.168.1.1") == 1450
    assert pod_mtu(vxlan, "fd00::1") == 1430
    assert pod_mtu(SETTINGS, "192.168.1.1") == 1500

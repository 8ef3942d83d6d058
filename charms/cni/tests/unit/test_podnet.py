"""The workload module on its own: plans, and applying only the difference to the kernel."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import podnet
import pytest

from kaji.host import CommandResult

SETTINGS = podnet.parse_settings({"backend": "host-gw"})
LOCAL = podnet.Node("cni/0", "10.1.0.0/24", "192.168.1.10")
PEERS = [
    podnet.Node("cni/1", "10.1.1.0/24", "192.168.1.11"),
    podnet.Node("cni/2", "10.1.2.0/24", "192.168.1.12"),
]


class FakeKernelHost:
    """Answers the read commands from canned output and records every other command."""

    def __init__(self, answers: Mapping[tuple[str, ...], tuple[int, str]]) -> None:
        self.answers = dict(answers)
        self.changes: list[tuple[str, ...]] = []

    def run(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float
    ) -> CommandResult:
        args = tuple(argv)
        if args in self.answers:
            code, out = self.answers[args]
        else:
            self.changes.append(args)
            code, out = 0, ""
        return CommandResult(args, code, out, "")


def _settled_answers(routes: list[dict]) -> dict[tuple[str, ...], tuple[int, str]]:
    chain = "\n".join(
        [f"-N {podnet.MASQ_CHAIN}"]
        + [f"-A {podnet.MASQ_CHAIN} {r}" for r in podnet.masquerade_rules("10.1.0.0/16")]
    )
    jump = ("-m", "comment", "--comment", podnet.MASQ_COMMENT, "-j", podnet.MASQ_CHAIN)
    return {
        ("sysctl", "-n", "net.ipv4.ip_forward"): (0, "1\n"),
        ("ip", "-j", "-d", "link", "show"): (0, "[]"),
        ("ip", "-j", "-4", "route", "show", "proto", "107"): (0, json.dumps(routes)),
        ("iptables", "-t", "nat", "-S", podnet.MASQ_CHAIN): (0, chain),
        ("iptables", "-t", "nat", "-C", "POSTROUTING", *jump): (0, ""),
    }


def test_only_the_difference_is_applied() -> None:
    current = [
        {"dst": "10.1.1.0/24", "gateway": "192.168.1.11", "dev": "eth0", "flags": []},
        {"dst": "10.1.9.0/24", "gateway": "192.168.1.19", "dev": "eth0", "flags": []},
    ]
    host = FakeKernelHost(_settled_answers(current))
    plan = podnet.desired_dataplane(SETTINGS, LOCAL, PEERS)
    changes = podnet.program_dataplane(podnet.Kernel(host), plan)  # type: ignore[arg-type]
    assert host.changes == [
        ("ip", "route", "del", "10.1.9.0/24", "proto", "107"),
        ("ip", "route", "replace", "10.1.2.0/24", "via", "192.168.1.12", "proto", "107"),
    ]
    assert changes == ["route 10.1.9.0/24 removed", "route 10.1.2.0/24 via 192.168.1.12"]


def test_netns_prefixes_every_command() -> None:
    host = FakeKernelHost({})
    podnet.Kernel(host, "node-1").run("ip", "link")  # type: ignore[arg-type]
    assert host.changes == [("ip", "netns", "exec", "node-1", "ip", "link")]


def test_a_changed_masquerade_chain_is_replaced_atomically() -> None:
    answers = _settled_answers([])
    answers[("iptables", "-t", "nat", "-S", podnet.MASQ_CHAIN)] = (1, "")
    host = FakeKernelHost(answers)
    plan = podnet.desired_dataplane(SETTINGS, LOCAL, [])
    podnet.program_dataplane(podnet.Kernel(host), plan)  # type: ignore[arg-type]
    assert host.changes == [("iptables-restore", "--noflush")]


def test_conflist_is_bridge_host_local_portmap_loopback() -> None:
    text = podnet.render_conflist(SETTINGS, "10.1.3.0/24", mtu=1450, ipam_data_dir="/tmp/x")
    conflist = json.loads(text)
    assert conflist["name"] == "kaji"
    assert conflist["cniVersion"] == "1.0.0"
    bridge, portmap, loopback = conflist["plugins"]
    assert bridge["bridge"] == podnet.BRIDGE
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
    assert text == podnet.render_conflist(
        SETTINGS, "10.1.3.0/24", mtu=1450, ipam_data_dir="/tmp/x"
    )


def test_vxlan_is_the_default_backend() -> None:
    # host-gw needs L2 adjacency (or a cloud routing pod subnets): not the default.
    assert podnet.parse_settings({}).backend == "vxlan"
    assert podnet.DEFAULTS["backend"] == "vxlan"


def test_vxlan_mtu_overhead_depends_on_the_underlay_family() -> None:
    vxlan = podnet.parse_settings({"backend": "vxlan", "mtu": 1500})
    assert podnet.pod_mtu(vxlan, "192.168.1.1") == 1450
    assert podnet.pod_mtu(vxlan, "fd00::1") == 1430
    assert podnet.pod_mtu(SETTINGS, "192.168.1.1") == 1500


def test_host_gw_refuses_ipv6_underlay() -> None:
    with pytest.raises(podnet.DataplaneError, match="use backend=vxlan"):
        podnet.desired_dataplane(SETTINGS, LOCAL, [podnet.Node("cni/1", "10.1.1.0/24", "fd00::1")])


def test_vtep_mac_is_derived_from_the_subnet() -> None:
    assert podnet.vtep_mac("10.1.2.0/24") == "0a:58:0a:01:02:00"
    assert podnet.vtep_address("10.1.2.0/24") == "10.1.2.0"


def test_peer_with_the_local_subnet_is_never_routed() -> None:
    plan = podnet.desired_dataplane(SETTINGS, LOCAL, [LOCAL, *PEERS])
    assert [r.dst for r in plan.routes] == ["10.1.1.0/24", "10.1.2.0/24"]

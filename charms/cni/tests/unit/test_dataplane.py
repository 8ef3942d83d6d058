"""The dataplane module on its own: plans, and applying only the difference to the kernel."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest
from kaji_cni import dataplane, literals
from kaji_cni.config import CniConfig

from kaji.host import CommandResult

SETTINGS = CniConfig.from_options({"backend": "host-gw"})
LOCAL = dataplane.Node("cni/0", "10.1.0.0/24", "192.168.1.10")
PEERS = [
    dataplane.Node("cni/1", "10.1.1.0/24", "192.168.1.11"),
    dataplane.Node("cni/2", "10.1.2.0/24", "192.168.1.12"),
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
        [f"-N {literals.MASQ_CHAIN}"]
        + [f"-A {literals.MASQ_CHAIN} {r}" for r in dataplane.masquerade_rules("10.1.0.0/16")]
    )
    jump = ("-m", "comment", "--comment", literals.MASQ_COMMENT, "-j", literals.MASQ_CHAIN)
    return {
        ("sysctl", "-n", "net.ipv4.ip_forward"): (0, "1\n"),
        ("ip", "-j", "-d", "link", "show"): (0, "[]"),
        ("ip", "-j", "-4", "route", "show", "proto", "107"): (0, json.dumps(routes)),
        ("iptables", "-t", "nat", "-S", literals.MASQ_CHAIN): (0, chain),
        ("iptables", "-t", "nat", "-C", "POSTROUTING", *jump): (0, ""),
    }


def test_only_the_difference_is_applied() -> None:
    current = [
        {"dst": "10.1.1.0/24", "gateway": "192.168.1.11", "dev": "eth0", "flags": []},
        {"dst": "10.1.9.0/24", "gateway": "192.168.1.19", "dev": "eth0", "flags": []},
    ]
    host = FakeKernelHost(_settled_answers(current))
    plan = dataplane.desired_dataplane(SETTINGS, LOCAL, PEERS)
    changes = dataplane.program_dataplane(dataplane.Kernel(host), plan)  # type: ignore[arg-type]
    assert host.changes == [
        ("ip", "route", "del", "10.1.9.0/24", "proto", "107"),
        ("ip", "route", "replace", "10.1.2.0/24", "via", "192.168.1.12", "proto", "107"),
    ]
    assert changes == ["route 10.1.9.0/24 removed", "route 10.1.2.0/24 via 192.168.1.12"]


def test_netns_prefixes_every_command() -> None:
    host = FakeKernelHost({})
    dataplane.Kernel(host, "node-1").run("ip", "link")  # type: ignore[arg-type]
    assert host.changes == [("ip", "netns", "exec", "node-1", "ip", "link")]


def test_a_changed_masquerade_chain_is_replaced_atomically() -> None:
    answers = _settled_answers([])
    answers[("iptables", "-t", "nat", "-S", literals.MASQ_CHAIN)] = (1, "")
    host = FakeKernelHost(answers)
    plan = dataplane.desired_dataplane(SETTINGS, LOCAL, [])
    dataplane.program_dataplane(dataplane.Kernel(host), plan)  # type: ignore[arg-type]
    assert host.changes == [("iptables-restore", "--noflush")]


def test_host_gw_refuses_ipv6_underlay() -> None:
    with pytest.raises(dataplane.DataplaneError, match="use backend=vxlan"):
        dataplane.desired_dataplane(
            SETTINGS, LOCAL, [dataplane.Node("cni/1", "10.1.1.0/24", "fd00::1")]
        )


def test_vtep_mac_is_derived_from_the_subnet() -> None:
    assert dataplane.vtep_mac("10.1.2.0/24") == "0a:58:0a:01:02:00"
    assert dataplane.vtep_address("10.1.2.0/24") == "10.1.2.0"


def test_peer_with_the_local_subnet_is_never_routed() -> None:
    plan = dataplane.desired_dataplane(SETTINGS, LOCAL, [LOCAL, *PEERS])
    assert [r.dst for r in plan.routes] == ["10.1.1.0/24", "10.1.2.0/24"]

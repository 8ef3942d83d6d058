"""The cni charm's dataplane for real: nodes and pods as network namespaces, real CNI plugins.

Each "node" is a network namespace on an underlay the test builds (bridges inside a router
namespace of their own). The node is programmed by the cni charm's workload module
(``kaji_cni.dataplane.configure_node`` with ``netns=`` so every command runs inside the node),
and pods are attached by executing the standard CNI plugins with the conflist that code
rendered, chained exactly as libcni does (name and cniVersion injected, each result passed on
as prevResult). Host-local's dataDir points at a temp dir. Every namespace is deleted
afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from charm_source import load_charm_module

from kaji.host import Host

CNI_BIN = "/usr/lib/cni"
cni_config = load_charm_module("cni", "kaji_cni.config")
dataplane = load_charm_module("cni", "kaji_cni.dataplane")
literals = load_charm_module("cni", "kaji_cni.literals")


def _run(*argv: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result


@dataclass
class Pod:
    netns: str
    address: str


@dataclass
class NodeNs:
    name: str
    netns: str
    underlay: str
    host: Host
    ipam_dir: Path
    subnet: str
    pods: list[Pod] = field(default_factory=list)

    def as_node(self) -> object:
        return dataplane.Node(self.name, self.subnet, self.underlay)


class Lab:
    """Namespaces made by one test, all deleted by ``cleanup``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tag = f"kcni{os.getpid() % 100000}"
        self.namespaces: list[str] = []

    def netns(self, name: str) -> str:
        full = f"{self.tag}-{name}"
        _run("ip", "netns", "add", full)
        self.namespaces.append(full)
        _run("ip", "-n", full, "link", "set", "lo", "up")
        return full

    def cleanup(self) -> None:
        # Pods first (their veths go with them), then nodes, then the router.
        for ns in reversed(self.namespaces):
            _run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def router(self, segments: int) -> str:
        """A namespace holding one bridge per underlay segment, forwarding between them."""
        router = self.netns("router")
        _run("ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for seg in range(1, segments + 1):
            _run("ip", "-n", router, "link", "add", f"seg{seg}", "type", "bridge")
            _run(
                "ip", "-n", router, "addr", "add", f"192.168.{80 + seg}.254/24", "dev", f"seg{seg}"
            )
            _run("ip", "-n", router, "link", "set", f"seg{seg}", "up")
        return router

    def node(self, router: str, index: int, segment: int, subnet: str) -> NodeNs:
        """A node namespace plugged into `segment` of the router (eth0, default route)."""
        ns = self.netns(f"node{index}")
        port = f"n{index}"
        _run("ip", "-n", router, "link", "add", port, "type", "veth", "peer", "eth0", "netns", ns)
        _run("ip", "-n", router, "link", "set", port, "master", f"seg{segment}", "up")
        underlay = f"192.168.{80 + segment}.{index}"
        _run("ip", "-n", ns, "addr", "add", f"{underlay}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", f"192.168.{80 + segment}.254")
        root = self.tmp_path / f"node{index}"
        root.mkdir()
        ipam_dir = self.tmp_path / f"ipam-node{index}"
        return NodeNs(f"cni/{index}", ns, underlay, Host(root), ipam_dir, subnet)

    def add_pod(self, node: NodeNs) -> Pod:
        """Attach a new pod namespace to `node` with the conflist the charm code rendered."""
        pod_ns = self.netns(f"node{node.name[-1]}-pod{len(node.pods)}")
        conflist_path = node.host.path(f"{literals.CNI_CONF_DIR}/{literals.CONFLIST_NAME}")
        result = cni_add(node.netns, pod_ns, json.loads(conflist_path.read_text()))
        pod = Pod(pod_ns, result["ips"][0]["address"].split("/")[0])
        node.pods.append(pod)
        return pod


def cni_add(node_ns: str, pod_ns: str, conflist: dict) -> dict:
    """Run each plugin of `conflist` (ADD) inside `node_ns` for `pod_ns`, as libcni chains them."""
    env = {
        **os.environ,
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": pod_ns,
        "CNI_NETNS": f"/run/netns/{pod_ns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": CNI_BIN,
    }
    previous: dict | None = None
    for plugin in conflist["plugins"]:
        config = {**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
        if previous is not None:
            config["prevResult"] = previous
        out = _run(
            "ip", "netns", "exec", node_ns, f"{CNI_BIN}/{plugin['type']}",
            input=json.dumps(config), env=env,
        )  # fmt: skip
        previous = json.loads(out.stdout)
    assert previous is not None
    return previous


def pings(pod: Pod, address: str, attempts: int = 4) -> bool:
    for _ in range(attempts):
        out = _run(
            "ip", "netns", "exec", pod.netns, "busybox", "ping", "-c", "1", "-W", "1", address,
            check=False,
        )  # fmt: skip
        if out.returncode == 0:
            return True
        time.sleep(0.2)
    return False


def owned_routes(node: NodeNs) -> dict[str, dict]:
    out = _run(
        "ip", "-n", node.netns, "-j", "-4", "route", "show", "proto", literals.ROUTE_PROTOCOL
    )
    return {r["dst"]: r for r in json.loads(out.stdout or "[]")}


def configure(settings: object, nodes: list[NodeNs], node: NodeNs) -> object:
    peers = [n.as_node() for n in nodes if n is not node]
    return dataplane.configure_node(
        node.host,
        settings,
        node.as_node(),
        peers,
        service_cidr="10.152.183.0/24",
        netns=node.netns,
        ipam_data_dir=str(node.ipam_dir),
    )


@pytest.fixture
def lab(tmp_path: Path, as_root: None, require_binaries: Callable[..., None]) -> Iterator[Lab]:
    require_binaries("ip", "bridge", "iptables", "iptables-restore", "sysctl", "busybox")
    missing = [
        p
        for p in ("bridge", "host-local", "portmap", "loopback")
        if not os.access(f"{CNI_BIN}/{p}", os.X_OK)
    ]
    if missing:
        pytest.skip(
            f"CNI plugins missing in {CNI_BIN}: {', '.join(missing)} (containernetworking-plugins)"
        )
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.cleanup()


def _cross_node_pairs(nodes: list[NodeNs]) -> list[tuple[Pod, Pod]]:
    return [
        (a, b)
        for src in nodes
        for dst in nodes
        if src is not dst
        for a in src.pods[:1]
        for b in dst.pods
    ]


def _build(lab: Lab, backend: str | None, routed: bool) -> tuple[object, list[NodeNs], str]:
    """Three nodes; `backend` None: the charm's default."""
    config = {"cidr": "10.1.0.0/16"} if backend is None else {"backend": backend}
    settings = cni_config.CniConfig.from_options(config)
    router = lab.router(3 if routed else 1)
    subnets = ["10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24"]
    nodes = [lab.node(router, i, i if routed else 1, subnets[i - 1]) for i in (1, 2, 3)]
    return settings, nodes, router


def test_host_gw_pods_reach_pods_on_other_nodes(lab: Lab) -> None:
    settings, nodes, _ = _build(lab, "host-gw", routed=False)
    for node in nodes:
        result = configure(settings, nodes, node)
        assert result.programmed
        assert "sysctl net.ipv4.ip_forward=1" in result.changes
    for node in nodes:
        lab.add_pod(node)
    lab.add_pod(nodes[0])  # two pods on node 1

    assert owned_routes(nodes[0]) == {
        "10.1.1.0/24": {
            "dst": "10.1.1.0/24",
            "gateway": "192.168.81.2",
            "dev": "eth0",
            "flags": [],
        },
        "10.1.2.0/24": {
            "dst": "10.1.2.0/24",
            "gateway": "192.168.81.3",
            "dev": "eth0",
            "flags": [],
        },
    }
    for src, dst in _cross_node_pairs(nodes):
        assert pings(src, dst.address), f"{src.netns} cannot reach {dst.netns} ({dst.address})"
    assert pings(nodes[0].pods[0], nodes[0].pods[1].address)

    # Traffic leaving the cluster CIDR is masqueraded: the underlay gateway has no pod routes,
    # so without the rules it never answers; a reconcile repairs the flushed chain.
    assert pings(nodes[1].pods[0], "192.168.81.254")
    _run("ip", "netns", "exec", nodes[1].netns, "iptables", "-t", "nat", "-F", literals.MASQ_CHAIN)
    assert not pings(nodes[1].pods[0], "192.168.81.254", attempts=1)
    repaired = configure(settings, nodes, nodes[1])
    assert repaired.changes == (f"iptables nat {literals.MASQ_CHAIN}: 3 rules",)
    assert pings(nodes[1].pods[0], "192.168.81.254")

    # A second pass changes nothing, not even a file.
    for node in nodes:
        again = configure(settings, nodes, node)
        assert again.changes == ()
        assert not again.files_changed

    # Node 3 departs: the others drop its route and can no longer reach its pods.
    gone = nodes.pop()
    for node in nodes:
        result = configure(settings, nodes, node)
        assert result.changes == ("route 10.1.2.0/24 removed",)
        assert set(owned_routes(node)) == {n.subnet for n in nodes if n is not node}
    assert not pings(nodes[0].pods[0], gone.pods[0].address, attempts=1)
    assert pings(nodes[0].pods[0], nodes[1].pods[0].address)


def test_default_vxlan_pods_reach_pods_across_routed_underlay(lab: Lab) -> None:
    # The default backend must work where nodes are not on one L2 segment (most clouds).
    settings, nodes, _ = _build(lab, None, routed=True)
    assert settings.backend == "vxlan"  # type: ignore[attr-defined]
    for node in nodes:
        assert configure(settings, nodes, node).programmed
        lab.add_pod(node)

    node1 = nodes[0]
    link = json.loads(
        _run("ip", "-n", node1.netns, "-j", "-d", "link", "show", literals.VXLAN_DEVICE).stdout
    )[0]
    assert link["linkinfo"]["info_data"]["id"] == 1
    assert link["linkinfo"]["info_data"]["port"] == 4789
    assert link["address"] == "0a:58:0a:01:00:00"
    assert link["mtu"] == 1450
    fdb = json.loads(
        _run("bridge", "-n", node1.netns, "-j", "fdb", "show", "dev", literals.VXLAN_DEVICE).stdout
    )
    assert {(e["mac"], e["dst"]) for e in fdb if e.get("dst")} == {
        ("0a:58:0a:01:01:00", "192.168.82.2"),
        ("0a:58:0a:01:02:00", "192.168.83.3"),
    }
    routes = owned_routes(node1)
    assert routes["10.1.2.0/24"]["gateway"] == "10.1.2.0"
    assert routes["10.1.2.0/24"]["dev"] == literals.VXLAN_DEVICE

    for src, dst in _cross_node_pairs(nodes):
        assert pings(src, dst.address), f"{src.netns} cannot reach {dst.netns} ({dst.address})"
    assert pings(nodes[2].pods[0], "192.168.83.254")  # masqueraded out of the cluster

    for node in nodes:
        assert configure(settings, nodes, node).changes == ()

    gone = nodes.pop()
    for node in nodes:
        configure(settings, nodes, node)
        assert set(owned_routes(node)) == {n.subnet for n in nodes if n is not node}
        neigh = json.loads(
            _run(
                "ip", "-n", node.netns, "-j", "neigh", "show", "dev", literals.VXLAN_DEVICE
            ).stdout
        )
        assert "10.1.2.0" not in {n["dst"] for n in neigh}
        fdb = json.loads(
            _run(
                "bridge", "-n", node.netns, "-j", "fdb", "show", "dev", literals.VXLAN_DEVICE
            ).stdout
        )
        assert "192.168.83.3" not in {e.get("dst") for e in fdb}
    assert not pings(nodes[0].pods[0], gone.pods[0].address, attempts=1)
    assert pings(nodes[0].pods[0], nodes[1].pods[0].address)


def test_backend_switch_and_removal_leave_no_stale_state(lab: Lab) -> None:
    settings, nodes, _ = _build(lab, "vxlan", routed=False)
    node1 = nodes[0]
    configure(settings, nodes, node1)
    host_gw = cni_config.CniConfig.from_options({"backend": "host-gw"})
    result = configure(host_gw, nodes, node1)
    assert f"deleted {literals.VXLAN_DEVICE}" in result.changes
    routes = owned_routes(node1)
    assert {r["gateway"] for r in routes.values()} == {"192.168.81.2", "192.168.81.3"}

    dataplane.remove_node(node1.host, netns=node1.netns)
    assert owned_routes(node1) == {}
    chains = _run("ip", "netns", "exec", node1.netns, "iptables", "-t", "nat", "-S").stdout
    assert literals.MASQ_CHAIN not in chains
    assert not node1.host.exists(f"{literals.CNI_CONF_DIR}/{literals.CONFLIST_NAME}")


def test_host_gw_refuses_nodes_on_other_segments(lab: Lab) -> None:
    settings, nodes, _ = _build(lab, "host-gw", routed=True)
    with pytest.raises(dataplane.DataplaneError, match="use backend=vxlan"):
        configure(settings, nodes, nodes[0])

"""The kernel state of one node's pod network: routes or VXLAN entries, masquerading.

No ops here: the charm hands in a Host, the validated config, this node and its peers. The
module computes the kernel state the node needs (a :class:`Dataplane`), writes the CNI conflist
(:mod:`kaji_cni.conflist`) and, where allowed, makes the kernel match the plan by reading the
current state (``ip -j ...``, ``bridge -j fdb``, ``iptables -S``) and applying only the
difference.

The kernel is programmed only on a real machine (``host.is_sandbox`` false) or when the
caller opts in by naming a network namespace (every command then runs under
``ip netns exec <netns>``). In a sandbox the desired state is only recorded, in
:data:`~kaji_cni.literals.STATE_PATH` under the sandbox root.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaji.host import CommandError, Host
from kaji_cni.config import CniConfig
from kaji_cni.conflist import pod_mtu, render_conflist
from kaji_cni.literals import (
    CNI_CONF_DIR,
    CONFLIST_NAME,
    MASQ_CHAIN,
    MASQ_COMMENT,
    ROUTE_PROTOCOL,
    STATE_PATH,
    SYSCTL_PATH,
    VXLAN_DEVICE,
)


class DataplaneError(RuntimeError):
    """The kernel could not be made to match the desired state."""


@dataclass(frozen=True)
class Node:
    """A node of the pod network: who it is, its pod subnet, its underlay address."""

    name: str
    subnet: str
    underlay: str


def vtep_mac(subnet: str) -> str:
    """The MAC of a node's VXLAN device, derived from its pod subnet (0a:58 + the IPv4)."""
    address = ipaddress.IPv4Network(subnet).network_address.packed
    return ":".join(f"{b:02x}" for b in (0x0A, 0x58, *address))


def vtep_address(subnet: str) -> str:
    """The address of a node's VXLAN device: its pod subnet's network address."""
    return str(ipaddress.ip_network(subnet).network_address)


@dataclass(frozen=True, order=True)
class Route:
    """A route to another node's pod subnet; `dev` None lets the kernel pick (host-gw)."""

    dst: str
    gateway: str
    dev: str | None = None
    onlink: bool = False

    def argv(self) -> list[str]:
        """Arguments after ``ip route replace``."""
        args = [self.dst, "via", self.gateway]
        if self.dev:
            args += ["dev", self.dev]
        if self.onlink:
            args.append("onlink")
        return [*args, "proto", ROUTE_PROTOCOL]


@dataclass(frozen=True, order=True)
class VxlanPeer:
    """Another node as the VXLAN device sees it."""

    vtep: str
    mac: str
    underlay: str


@dataclass(frozen=True)
class VxlanDevice:
    """This node's VXLAN device."""

    vni: int
    port: int
    local: str
    mac: str
    address: str
    mtu: int


@dataclass(frozen=True)
class Dataplane:
    """The kernel state one node needs for the pod network."""

    backend: str
    cluster_cidr: str
    subnet: str
    underlay: str
    routes: tuple[Route, ...]
    vxlan: VxlanDevice | None = None
    vxlan_peers: tuple[VxlanPeer, ...] = ()
    masquerade: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        """Deterministic JSON (the recorded state file)."""

        def plain(obj: Any) -> Any:
            if hasattr(obj, "__dataclass_fields__"):
                return {k: plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
            if isinstance(obj, tuple):
                return [plain(o) for o in obj]
            return obj

        return json.dumps(plain(self), indent=2, sort_keys=True) + "\n"


def masquerade_rules(cluster_cidr: str, service_cidr: str | None = None) -> tuple[str, ...]:
    """The masquerade chain's iptables rules, written as ``iptables -S`` prints them.

    Raises:
        DataplaneError: `service_cidr` is not of the pod network's IP family (its rule would
            be one iptables cannot hold).
    """
    if service_cidr:
        pods, services = ipaddress.ip_network(cluster_cidr), ipaddress.ip_network(service_cidr)
        if pods.version != services.version:
            raise DataplaneError(
                f"service-cidr {services} is not of the pod network's IP family ({pods})"
            )
    rules = [f"-s {cluster_cidr} -d {cluster_cidr} -j RETURN"]
    if service_cidr:
        rules.append(f"-s {cluster_cidr} -d {service_cidr} -j RETURN")
    rules.append(f"-s {cluster_cidr} ! -d 224.0.0.0/4 -j MASQUERADE --random-fully")
    return tuple(rules)


def desired_dataplane(
    config: CniConfig, local: Node, peers: Iterable[Node], *, service_cidr: str | None = None
) -> Dataplane:
    """What the kernel of `local` must hold to reach every peer's pods.

    Raises:
        DataplaneError: host-gw with a non-IPv4 underlay address, or a service CIDR of
            another IP family than the pod network.
    """
    others = sorted(
        (p for p in peers if p.name != local.name and p.subnet != local.subnet),
        key=lambda p: ipaddress.ip_network(p.subnet),
    )
    masq = masquerade_rules(config.cidr, service_cidr)
    if config.backend == "host-gw":
        for node in (local, *others):
            if ipaddress.ip_address(node.underlay).version != 4:
                raise DataplaneError(
                    f"host-gw needs IPv4 underlay addresses ({node.name} has {node.underlay});"
                    " use backend=vxlan"
                )
        routes = tuple(Route(p.subnet, p.underlay) for p in others)
        return Dataplane(
            "host-gw", config.cidr, local.subnet, local.underlay, routes, masquerade=masq
        )
    device = VxlanDevice(
        vni=config.vni,
        port=config.vxlan_port,
        local=local.underlay,
        mac=vtep_mac(local.subnet),
        address=vtep_address(local.subnet),
        mtu=pod_mtu(config, local.underlay),
    )
    vx_peers = tuple(
        VxlanPeer(vtep_address(p.subnet), vtep_mac(p.subnet), p.underlay) for p in others
    )
    routes = tuple(Route(p.subnet, vtep_address(p.subnet), VXLAN_DEVICE, True) for p in others)
    return Dataplane(
        "vxlan", config.cidr, local.subnet, local.underlay, routes, device, vx_peers, masq
    )


# --- the kernel -----------------------------------------------------------------------------


class Kernel:
    """Runs the network tools on a Host, optionally inside a network namespace."""

    def __init__(self, host: Host, netns: str | None = None) -> None:
        self.host = host
        self.prefix: tuple[str, ...] = ("ip", "netns", "exec", netns) if netns else ()

    def run(self, *argv: str, input: str | None = None, check: bool = True) -> str:
        """Run a tool; return its stdout.

        Raises:
            DataplaneError: it failed and `check`.
        """
        try:
            result = self.host.run([*self.prefix, *argv], input=input, check=check, timeout=30)
        except CommandError as exc:
            raise DataplaneError(str(exc)) from None
        return result.stdout

    def ok(self, *argv: str) -> bool:
        """Whether the tool exits 0 (for checks such as ``iptables -C``)."""
        return self.host.run([*self.prefix, *argv], check=False, timeout=30).ok

    def json(self, *argv: str) -> list[dict[str, Any]]:
        """Run a ``-j`` tool and parse its JSON (empty output is an empty list)."""
        text = self.run(*argv).strip()
        return json.loads(text) if text else []


def _norm_ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _ensure_forwarding(kernel: Kernel, changes: list[str]) -> None:
    if kernel.run("sysctl", "-n", "net.ipv4.ip_forward").strip() != "1":
        kernel.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        changes.append("sysctl net.ipv4.ip_forward=1")


def _device(kernel: Kernel, name: str) -> dict[str, Any] | None:
    links = kernel.json("ip", "-j", "-d", "link", "show")
    return next((link for link in links if link.get("ifname") == name), None)


def _ensure_vxlan(kernel: Kernel, want: VxlanDevice | None, changes: list[str]) -> None:
    link = _device(kernel, VXLAN_DEVICE)
    if link is not None and want is not None:
        data = link.get("linkinfo", {}).get("info_data", {})
        same = (
            link.get("linkinfo", {}).get("info_kind") == "vxlan"
            and data.get("id") == want.vni
            and data.get("port") == want.port
            and (data.get("local") or data.get("local6")) is not None
            and _norm_ip(data.get("local") or data.get("local6")) == _norm_ip(want.local)
        )
        if not same:
            kernel.run("ip", "link", "del", VXLAN_DEVICE)
            changes.append(f"deleted {VXLAN_DEVICE} (vni, port or local address changed)")
            link = None
    elif link is not None:
        kernel.run("ip", "link", "del", VXLAN_DEVICE)
        changes.append(f"deleted {VXLAN_DEVICE}")
        return
    if want is None:
        return
    if link is None:
        kernel.run(
            "ip", "link", "add", VXLAN_DEVICE, "type", "vxlan", "id", str(want.vni),
            "dstport", str(want.port), "local", want.local, "nolearning",
        )  # fmt: skip
        changes.append(f"created {VXLAN_DEVICE} vni {want.vni} port {want.port}")
        link = {}
    if link.get("address") != want.mac or link.get("mtu") != want.mtu:
        kernel.run("ip", "link", "set", VXLAN_DEVICE, "address", want.mac, "mtu", str(want.mtu))
        changes.append(f"{VXLAN_DEVICE} address {want.mac} mtu {want.mtu}")
    if "UP" not in link.get("flags", []):
        kernel.run("ip", "link", "set", VXLAN_DEVICE, "up")
        changes.append(f"{VXLAN_DEVICE} up")
    addrs = kernel.json("ip", "-j", "-4", "addr", "show", "dev", VXLAN_DEVICE)
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for entry in addrs
        for a in entry.get("addr_info", [])
        if a.get("family") == "inet"
    }
    wanted = f"{want.address}/32"
    for stale in sorted(have - {wanted}):
        kernel.run("ip", "addr", "del", stale, "dev", VXLAN_DEVICE)
        changes.append(f"removed address {stale} from {VXLAN_DEVICE}")
    if wanted not in have:
        kernel.run("ip", "addr", "add", wanted, "dev", VXLAN_DEVICE)
        changes.append(f"address {wanted} on {VXLAN_DEVICE}")


def _sync_vxlan_peers(kernel: Kernel, peers: Sequence[VxlanPeer], changes: list[str]) -> None:
    neighbours = {
        n["dst"]: n.get("lladdr")
        for n in kernel.json("ip", "-j", "-4", "neigh", "show", "dev", VXLAN_DEVICE)
        if "PERMANENT" in n.get("state", [])
    }
    fdb = {
        e["mac"]: _norm_ip(e["dst"])
        for e in kernel.json("bridge", "-j", "fdb", "show", "dev", VXLAN_DEVICE)
        if e.get("dst") and e.get("mac") != "00:00:00:00:00:00"
    }
    want_neigh = {p.vtep: p.mac for p in peers}
    want_fdb = {p.mac: _norm_ip(p.underlay) for p in peers}
    for mac in sorted(set(fdb) - set(want_fdb)):
        kernel.run("bridge", "fdb", "del", mac, "dev", VXLAN_DEVICE, "dst", fdb[mac], "self")
        changes.append(f"fdb {mac} removed")
    for vtep in sorted(set(neighbours) - set(want_neigh)):
        kernel.run("ip", "neigh", "del", vtep, "dev", VXLAN_DEVICE)
        changes.append(f"neighbour {vtep} removed")
    for mac, dst in sorted(want_fdb.items()):
        if fdb.get(mac) != dst:
            kernel.run(
                "bridge", "fdb", "replace", mac, "dev", VXLAN_DEVICE, "dst", dst, "self",
                "permanent",
            )  # fmt: skip
            changes.append(f"fdb {mac} -> {dst}")
    for vtep, mac in sorted(want_neigh.items()):
        if neighbours.get(vtep) != mac:
            kernel.run(
                "ip", "neigh", "replace", vtep, "lladdr", mac, "dev", VXLAN_DEVICE, "nud",
                "permanent",
            )  # fmt: skip
            changes.append(f"neighbour {vtep} -> {mac}")


def _route_matches(route: Route, current: Mapping[str, Any]) -> bool:
    if current.get("gateway") != route.gateway:
        return False
    if route.dev is not None and current.get("dev") != route.dev:
        return False
    return route.onlink == ("onlink" in current.get("flags", []))


def _sync_routes(kernel: Kernel, routes: Sequence[Route], changes: list[str]) -> None:
    listed = kernel.json("ip", "-j", "-4", "route", "show", "proto", ROUTE_PROTOCOL)
    current = {r["dst"]: r for r in listed}
    wanted = {r.dst: r for r in routes}
    for dst in sorted(set(current) - set(wanted)):
        kernel.run("ip", "route", "del", dst, "proto", ROUTE_PROTOCOL)
        changes.append(f"route {dst} removed")
    for dst, route in sorted(wanted.items()):
        if dst in current and _route_matches(route, current[dst]):
            continue
        try:
            kernel.run("ip", "route", "replace", *route.argv())
        except DataplaneError as exc:
            if route.dev is None:
                raise DataplaneError(
                    f"host-gw cannot route {dst} via {route.gateway}: not on a directly"
                    " connected network (host-gw needs one L2 segment; use backend=vxlan)"
                ) from exc
            raise
        changes.append(f"route {dst} via {route.gateway}")


def _sync_masquerade(kernel: Kernel, rules: Sequence[str], changes: list[str]) -> None:
    have: list[str] | None = None
    if kernel.ok("iptables", "-t", "nat", "-S", MASQ_CHAIN):
        prefix = f"-A {MASQ_CHAIN} "
        have = [
            line[len(prefix) :]
            for line in kernel.run("iptables", "-t", "nat", "-S", MASQ_CHAIN).splitlines()
            if line.startswith(prefix)
        ]
    if have != list(rules):
        body = "".join(f"-A {MASQ_CHAIN} {rule}\n" for rule in rules)
        kernel.run(
            "iptables-restore", "--noflush", input=f"*nat\n:{MASQ_CHAIN} - [0:0]\n{body}COMMIT\n"
        )
        changes.append(f"iptables nat {MASQ_CHAIN}: {len(rules)} rules")
    jump = ("POSTROUTING", "-m", "comment", "--comment", MASQ_COMMENT, "-j", MASQ_CHAIN)
    if not kernel.ok("iptables", "-t", "nat", "-C", *jump):
        kernel.run("iptables", "-t", "nat", "-A", *jump)
        changes.append(f"iptables nat POSTROUTING -> {MASQ_CHAIN}")


def program_dataplane(kernel: Kernel, plan: Dataplane) -> list[str]:
    """Make the kernel match `plan`, touching only what differs; return what changed.

    Raises:
        DataplaneError: a tool failed (the message says which and why).
    """
    changes: list[str] = []
    _ensure_forwarding(kernel, changes)
    _ensure_vxlan(kernel, plan.vxlan, changes)
    if plan.vxlan is not None:
        _sync_vxlan_peers(kernel, plan.vxlan_peers, changes)
    _sync_routes(kernel, plan.routes, changes)
    _sync_masquerade(kernel, plan.masquerade, changes)
    return changes


def clear_dataplane(kernel: Kernel) -> list[str]:
    """Remove everything this module programs: routes, the VXLAN device, the masquerade."""
    changes: list[str] = []
    _ensure_vxlan(kernel, None, changes)
    _sync_routes(kernel, (), changes)
    jump = ("POSTROUTING", "-m", "comment", "--comment", MASQ_COMMENT, "-j", MASQ_CHAIN)
    while kernel.ok("iptables", "-t", "nat", "-C", *jump):
        kernel.run("iptables", "-t", "nat", "-D", *jump)
        changes.append(f"iptables nat POSTROUTING -> {MASQ_CHAIN} removed")
    if kernel.ok("iptables", "-t", "nat", "-S", MASQ_CHAIN):
        kernel.run("iptables", "-t", "nat", "-F", MASQ_CHAIN)
        kernel.run("iptables", "-t", "nat", "-X", MASQ_CHAIN)
        changes.append(f"iptables nat {MASQ_CHAIN} removed")
    return changes


# --- one call for the charm -------------------------------------------------------------------


@dataclass(frozen=True)
class NodeResult:
    """What :func:`configure_node` did."""

    plan: Dataplane
    files_changed: bool
    #: Whether the kernel was programmed (False: sandbox, only recorded).
    programmed: bool
    changes: tuple[str, ...] = ()


def programs_kernel(host: Host, netns: str | None = None) -> bool:
    """Whether :func:`configure_node` touches the kernel: a real machine, or a named netns."""
    return netns is not None or not host.is_sandbox


def configure_node(
    host: Host,
    config: CniConfig,
    local: Node,
    peers: Iterable[Node],
    *,
    service_cidr: str | None = None,
    conf_dir: str = CNI_CONF_DIR,
    netns: str | None = None,
    ipam_data_dir: str | None = None,
) -> NodeResult:
    """Render this node's CNI config, record the desired kernel state and program it.

    The kernel is programmed only when :func:`programs_kernel` says so; otherwise the plan is
    only written to :data:`STATE_PATH` (under the host's root).

    Raises:
        DataplaneError: the plan is impossible or a tool failed.
    """
    plan = desired_dataplane(config, local, peers, service_cidr=service_cidr)
    conflist = render_conflist(
        config, local.subnet, mtu=pod_mtu(config, local.underlay), ipam_data_dir=ipam_data_dir
    )
    changed = host.write_file(f"{conf_dir}/{CONFLIST_NAME}", conflist)
    changed |= host.write_file(SYSCTL_PATH, "net.ipv4.ip_forward = 1\n")
    changed |= host.write_file(STATE_PATH, plan.to_json())
    if not programs_kernel(host, netns):
        return NodeResult(plan, changed, False)
    changes = program_dataplane(Kernel(host, netns), plan)
    return NodeResult(plan, changed, True, tuple(changes))


def remove_node(host: Host, *, conf_dir: str = CNI_CONF_DIR, netns: str | None = None) -> None:
    """Undo :func:`configure_node`: the conflist, the state file and the kernel state."""
    host.remove_file(f"{conf_dir}/{CONFLIST_NAME}")
    host.remove_file(STATE_PATH)
    host.remove_file(SYSCTL_PATH)
    if programs_kernel(host, netns):
        clear_dataplane(Kernel(host, netns))

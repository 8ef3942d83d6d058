"""What the integration tests share: where things are, how long to wait, and small async helpers.

Everything a charm decides (action names and result keys, ports, the cluster domain) is a
constant here, so aligning the tests with the charms is a one-line change.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from pytest_operator.plugin import OpsTest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "k8s.yaml"
HA_OVERLAY = ROOT / "bundles" / "overlays" / "ha.yaml"
PACK_TOOL = ROOT / "tools" / "pack.py"
BUILD_DIR = ROOT / "build"
CHARM_NAMES = ("kaji-etcd", "kaji-control-plane", "kaji-worker", "kaji-cni")

ETCD, CONTROL_PLANE, WORKER, CNI = "etcd", "control-plane", "worker", "cni"
PRINCIPALS = (ETCD, CONTROL_PLANE, WORKER)
APPS = (*PRINCIPALS, CNI)

# Charm contract: actions and their result keys.
GET_KUBECONFIG = "get-kubeconfig"  # control-plane; result "kubeconfig": an admin kubeconfig
KUBECONFIG_KEY = "kubeconfig"
ETCD_HEALTH = "health"  # etcd; result "members": every member with "healthy"
ETCD_MEMBER_LIST = "member-list"  # etcd; result "members": every member of the cluster
ETCD_MEMBERS_KEY = "members"

# Workload contract: ports and names the cluster serves.
API_PORT = 6443
KUBELET_PORT = 10250
CLUSTER_DOMAIN = "cluster.local"
TEST_IMAGE = os.environ.get("KAJI_TEST_IMAGE", "docker.io/library/busybox:1.36")

# How long to wait. A first deploy downloads Kubernetes, etcd and container images.
DEPLOY_TIMEOUT = 45 * 60
SCALE_TIMEOUT = 20 * 60
IDLE_PERIOD = 60
KUBE_TIMEOUT = 10 * 60
# A kubelet that cannot reach the API is marked NotReady after 40 s (node-monitor-grace-period).
NODE_GRACE = 40
# What an anonymous request to the API or a kubelet must get: unauthenticated or forbidden.
REFUSED = {"401", "403"}

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float, interval: float = 5, what: str = ""
) -> T:
    """Call ``check`` until it returns without an AssertionError; re-raise the last one late."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError as exc:
            if time.monotonic() >= deadline:
                raise AssertionError(f"not within {timeout:.0f}s: {what}: {exc}") from exc
        await asyncio.sleep(interval)


def render_bundle(charms: Mapping[str, Path], directory: Path) -> Path:
    """Write bundles/k8s.yaml to ``directory`` with each charm replaced by its absolute path."""
    bundle = yaml.safe_load(BUNDLE.read_text(encoding="utf-8"))
    for app, spec in bundle["applications"].items():
        name = Path(spec["charm"]).name.removesuffix(".charm")
        if name not in charms:
            raise AssertionError(f"bundle application {app} uses {spec['charm']}: no such charm")
        spec["charm"] = str(charms[name].resolve())
    path = directory / "k8s.yaml"
    path.write_text(yaml.safe_dump(bundle, sort_keys=False), encoding="utf-8")
    return path


async def deploy_bundle(ops_test: OpsTest, charms: Mapping[str, Path], *overlays: Path) -> None:
    """Deploy the bundle (plus overlays) and wait until every unit is active and idle."""
    assert ops_test.model is not None
    bundle = render_bundle(charms, ops_test.tmp_path)
    args = ["deploy", str(bundle)]
    for overlay in overlays:
        args += ["--overlay", str(overlay)]
    await ops_test.juju(*args, check=True, fail_msg="juju deploy of the kaji bundle failed")
    await wait_active(ops_test, timeout=DEPLOY_TIMEOUT)


async def wait_active(
    ops_test: OpsTest, *, timeout: float, units: Mapping[str, int] | None = None
) -> None:
    """Wait until every kaji unit is active and idle, with exactly ``units`` units per app."""
    assert ops_test.model is not None
    for app, count in (units or {}).items():
        await ops_test.model.wait_for_idle(
            apps=[app], timeout=timeout, wait_for_exact_units=count, idle_period=IDLE_PERIOD
        )
    await ops_test.model.wait_for_idle(
        apps=list(APPS),
        status="active",
        raise_on_error=True,
        raise_on_blocked=True,
        timeout=timeout,
        idle_period=IDLE_PERIOD,
    )


async def juju_status(ops_test: OpsTest) -> dict[str, Any]:
    """``juju status --format json`` of the test model."""
    _, out, _ = await ops_test.juju("status", "--format", "json", check=True)
    status: dict[str, Any] = json.loads(out)
    return status


async def unit_names(ops_test: OpsTest, app: str) -> list[str]:
    """The application's units, sorted by number."""
    status = await juju_status(ops_test)
    units = status["applications"][app].get("units") or {}
    return sorted(units, key=lambda name: int(name.split("/")[1]))


async def leader(ops_test: OpsTest, app: str) -> str:
    """The name of the application's leader unit."""
    status = await juju_status(ops_test)
    for name, unit in (status["applications"][app].get("units") or {}).items():
        if unit.get("leader"):
            return str(name)
    raise AssertionError(f"{app} has no leader in juju status")


async def unit_addresses(ops_test: OpsTest, app: str) -> dict[str, set[str]]:
    """Every address of each unit's machine (public address and the machine's IP addresses)."""
    status = await juju_status(ops_test)
    machines = status.get("machines") or {}
    result: dict[str, set[str]] = {}
    for name, unit in (status["applications"][app].get("units") or {}).items():
        machine = machines.get(str(unit.get("machine")), {})
        addresses = set(machine.get("ip-addresses") or [])
        for key in ("public-address", "address"):
            if unit.get(key):
                addresses.add(unit[key])
        result[name] = addresses
    return result


async def public_addresses(ops_test: OpsTest, app: str) -> dict[str, str]:
    """Each unit's public address, as ``juju status`` shows it."""
    status = await juju_status(ops_test)
    units = status["applications"][app].get("units") or {}
    return {name: str(unit["public-address"]) for name, unit in units.items()}


def https(address: str, port: int, path: str = "/") -> str:
    """An https URL for an IPv4 or IPv6 address."""
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}{path}"


def internal_ip(node: Mapping[str, Any]) -> str:
    """A node's InternalIP."""
    for address in node.get("status", {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address["address"])
    raise AssertionError(f"node {node['metadata']['name']} has no InternalIP")


async def curl_status(ops_test: OpsTest, unit: str, target: str) -> str:
    """The HTTP status an anonymous HTTPS request from ``unit`` gets (000: no answer)."""
    out = await juju_exec(
        ops_test,
        unit,
        f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 10 '{target}' || true",
    )
    return out.strip()[-3:]


async def run_action(ops_test: OpsTest, unit: str, action: str, **params: str) -> dict[str, Any]:
    """Run an action (``unit`` may be ``app/leader``) and return its results; fail unless done."""
    args = ["run", unit, action, "--format", "json", "--wait", "5m"]
    args += [f"{key}={value}" for key, value in params.items()]
    _, out, _ = await ops_test.juju(*args, check=True, fail_msg=f"juju run {unit} {action}")
    (outcome,) = json.loads(out).values()
    assert outcome.get("status") == "completed", f"{unit} {action}: {outcome}"
    results: dict[str, Any] = outcome.get("results") or {}
    return results


async def juju_exec(ops_test: OpsTest, unit: str, command: str) -> str:
    """Run a shell command on a unit's machine and return its stdout; fail on non-zero exit."""
    _, out, _ = await ops_test.juju(
        "exec", "--unit", unit, "--", command, check=True, fail_msg=f"on {unit}: {command}"
    )
    return out


def kubeconfig_path(ops_test: OpsTest) -> Path:
    """Where a test module keeps the admin kubeconfig (its ops_test temporary directory)."""
    return Path(ops_test.tmp_path) / "kubeconfig"


async def fetch_kubeconfig(ops_test: OpsTest, path: Path) -> Path:
    """Write the admin kubeconfig from ``get-kubeconfig`` on the control-plane leader."""
    results = await run_action(ops_test, f"{CONTROL_PLANE}/leader", GET_KUBECONFIG)
    kubeconfig = results.get(KUBECONFIG_KEY)
    assert kubeconfig, f"{GET_KUBECONFIG} returned no {KUBECONFIG_KEY!r}: {sorted(results)}"
    config = yaml.safe_load(kubeconfig)
    assert config.get("kind") == "Config", "get-kubeconfig did not return a kubeconfig"
    path.write_text(kubeconfig, encoding="utf-8")
    path.chmod(0o600)
    return path


class Kubectl:
    """kubectl with one kubeconfig, run without blocking the event loop."""

    def __init__(self, ops_test: OpsTest, kubeconfig: Path) -> None:
        self.ops_test = ops_test
        self.kubeconfig = kubeconfig

    async def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run kubectl; return stdout, raising AssertionError on failure when ``check``."""
        rc, out, err = await self.ops_test.run(
            "kubectl",
            "--kubeconfig",
            str(self.kubeconfig),
            "--request-timeout",
            "30s",
            *args,
            stdin=stdin.encode() if stdin is not None else None,
        )
        if check and rc != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({rc}): {err.strip()}")
        return out

    async def json(self, *args: str) -> dict[str, Any]:
        """Run ``kubectl ... -o json`` and parse it."""
        data: dict[str, Any] = json.loads(await self.run(*args, "-o", "json"))
        return data

    async def apply(self, manifest: Mapping[str, Any] | list[Mapping[str, Any]]) -> None:
        """Apply one manifest or a list of them."""
        docs = manifest if isinstance(manifest, list) else [manifest]
        await self.run("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    async def exec(self, namespace: str, pod: str, *command: str) -> str:
        """Run a command in a pod and return its stdout."""
        return await self.run("exec", "-n", namespace, pod, "--", *command)


def condition(obj: Mapping[str, Any], kind: str) -> str | None:
    """The status ("True", "False", "Unknown") of a node's or pod's condition, if present."""
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def node_ips(node: Mapping[str, Any]) -> set[str]:
    """A node's InternalIP and ExternalIP addresses."""
    return {
        a["address"]
        for a in node.get("status", {}).get("addresses") or []
        if a.get("type") in ("InternalIP", "ExternalIP")
    }


async def worker_nodes(ops_test: OpsTest, kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    """Map every worker unit to its Node object, matched by the machine's addresses.

    Fails if a worker unit has no node or two units claim the same node.
    """
    nodes = (await kubectl.json("get", "nodes"))["items"]
    units = await unit_addresses(ops_test, WORKER)
    result: dict[str, dict[str, Any]] = {}
    for unit, addresses in units.items():
        matches = [n for n in nodes if node_ips(n) & addresses]
        assert len(matches) == 1, (
            f"{unit} ({sorted(addresses)}) matches {len(matches)} nodes: "
            f"{[(n['metadata']['name'], sorted(node_ips(n))) for n in nodes]}"
        )
        result[unit] = matches[0]
    names = [n["metadata"]["name"] for n in result.values()]
    assert len(set(names)) == len(names), f"worker units share nodes: {result.keys()} -> {names}"
    return result


async def assert_workers_ready(ops_test: OpsTest, kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    """Every worker unit has exactly one node and every node in the cluster is Ready=True."""
    nodes = (await kubectl.json("get", "nodes"))["items"]
    not_ready = {
        n["metadata"]["name"]: condition(n, "Ready")
        for n in nodes
        if condition(n, "Ready") != "True"
    }
    assert not not_ready, f"nodes not Ready: {not_ready}"
    by_unit = await worker_nodes(ops_test, kubectl)
    assert len(nodes) == len(by_unit), (
        f"{len(nodes)} nodes for {len(by_unit)} worker units: "
        f"{sorted(n['metadata']['name'] for n in nodes)}"
    )
    return by_unit


def parse_members(value: Any) -> list[dict[str, Any]]:
    """Normalise an etcd action's ``members`` result to a list of member mappings.

    Juju returns nested results as mappings (keyed by member) and a charm may also return a
    JSON string; both forms are accepted, nothing else is.
    """
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, Mapping):
        return [{"name": key, **dict(member)} for key, member in value.items()]
    if isinstance(value, list):
        return [dict(member) for member in value]
    raise AssertionError(f"unexpected etcd members result: {value!r}")


def truthy(value: Any) -> bool:
    """A Juju action result flag: true as a boolean or the string "true"."""
    return value is True or str(value).lower() == "true"

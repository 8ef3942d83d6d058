"""What the integration tests share: where things are, how long to wait, and small async helpers.

Everything a charm decides (action names and result keys, ports, the cluster domain) is a
constant here, so aligning the tests with the charms is a one-line change.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from pytest_operator.plugin import OpsTest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "k8s.yaml"
HA_OVERLAY = ROOT / "bundles" / "overlays" / "ha.yaml"
LXD_OVERLAY = ROOT / "bundles" / "overlays" / "lxd.yaml"
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
# Every unit must stay active and idle this long before the model counts as settled.
IDLE_PERIOD = 60
STATUS_INTERVAL = 10
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


# Juju 3.6 constraint keys (core/constraints/constraints.go; cpu-cores is an alias of cores).
CONSTRAINT_KEYS = frozenset(
    {
        "allocate-public-ip",
        "arch",
        "container",
        "cores",
        "cpu-cores",
        "cpu-power",
        "image-id",
        "instance-role",
        "instance-type",
        "mem",
        "root-disk",
        "root-disk-source",
        "spaces",
        "tags",
        "virt-type",
        "zones",
    }
)
SIZE_KEYS = frozenset({"mem", "root-disk"})
COUNT_KEYS = frozenset({"cores", "cpu-cores", "cpu-power"})
# The values the LXD provider accepts for virt-type (internal/provider/lxd/environ_policy.go).
LXD_VIRT_TYPES = frozenset({"container", "virtual-machine"})
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([MGTP]?)$")
_SIZE_FACTOR = {"": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}


def size_mib(value: str) -> float:
    """A Juju size (``mem``, ``root-disk``: MiB, or with an M/G/T/P suffix) in MiB."""
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size like 4096, 512M or 4G")
    return float(match.group(1)) * _SIZE_FACTOR[match.group(2)]


def parse_constraints(text: str) -> dict[str, str]:
    """Parse a constraints string the way Juju does (space-separated key=value), strictly.

    Raises ValueError naming the offending part: an unknown key, a key given twice, a count
    or size that is not one, or a virt-type LXD does not know.
    """
    result: dict[str, str] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"{part!r} is not key=value")
        if key not in CONSTRAINT_KEYS:
            raise ValueError(f"unknown constraint {key!r} (Juju knows {sorted(CONSTRAINT_KEYS)})")
        key = "cores" if key == "cpu-cores" else key
        if key in result:
            raise ValueError(f"constraint {key!r} given twice")
        if key in COUNT_KEYS and not value.isdigit():
            raise ValueError(f"{key}={value!r}: not a whole number")
        if key in SIZE_KEYS:
            size_mib(value)
        if key == "virt-type" and value not in LXD_VIRT_TYPES:
            raise ValueError(f"virt-type={value!r}: LXD knows {sorted(LXD_VIRT_TYPES)}")
        result[key] = value
    return result


def model_provider_type(show_model: Mapping[str, Any]) -> str:
    """The cloud type ("lxd", "ec2", "maas", ...) from ``juju show-model --format json``.

    The output maps the model's name to its details; ``type`` is the provider type
    (jubilant's ModelInfo, generated from Juju's own structs), ``model-type`` is iaas/caas.
    """
    if len(show_model) != 1:
        raise AssertionError(f"juju show-model returned {len(show_model)} models")
    (info,) = show_model.values()
    provider = info.get("type") if isinstance(info, Mapping) else None
    if not isinstance(provider, str) or not provider:
        raise AssertionError(f"juju show-model gave no provider type: {info!r}")
    return provider


def overlays_for(provider: str, requested: Sequence[Path] = ()) -> list[Path]:
    """The overlays to deploy with: the LXD overlay first on a LXD cloud, then ``requested``.

    Later overlays win in Juju, so one given by the test (or the user) can still change what
    the LXD overlay sets.
    """
    lxd = [LXD_OVERLAY] if provider == "lxd" and LXD_OVERLAY not in requested else []
    return [*lxd, *requested]


async def cloud_type(ops_test: OpsTest) -> str:
    """The provider type of the test model's cloud."""
    assert ops_test.model_full_name, "no test model"
    _, out, _ = await ops_test.juju(
        "show-model", ops_test.model_full_name, "--format", "json", check=True
    )
    return model_provider_type(json.loads(out))


async def deploy_bundle(ops_test: OpsTest, charms: Mapping[str, Path], *overlays: Path) -> None:
    """Deploy the bundle (plus overlays, and the LXD one on LXD); wait until all is active."""
    assert ops_test.model is not None
    bundle = render_bundle(charms, ops_test.tmp_path)
    args = ["deploy", str(bundle)]
    provider = await cloud_type(ops_test)
    for overlay in overlays_for(provider, overlays):
        args += ["--overlay", str(overlay)]
    print(f"cloud type {provider}: juju {' '.join(args)}")
    await ops_test.juju(*args, check=True, fail_msg="juju deploy of the kaji bundle failed")
    await wait_active(ops_test, timeout=DEPLOY_TIMEOUT)


def _principal_units(app: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """An application's own units in ``juju status --format json`` (subordinates excluded)."""
    units = app.get("units") or {}
    return {name: unit for name, unit in units.items() if isinstance(unit, Mapping)}


def unsettled(
    status: Mapping[str, Any],
    apps: Sequence[str] = APPS,
    units: Mapping[str, int] | None = None,
) -> list[str]:
    """Why ``juju status --format json`` is not yet settled; empty when it is.

    Settled: every app in ``apps`` is there, with exactly ``units[app]`` units where given;
    every unit (subordinates included) has workload ``active`` and agent ``idle``; and every
    principal unit of an app a subordinate in ``apps`` follows carries one of its units.
    A blocked or error unit is only not settled yet: charms retry downloads and Juju retries
    failed hooks, so only the timeout decides.
    """
    problems: list[str] = []
    applications = status.get("applications") or {}
    every: dict[str, Mapping[str, Any]] = {}
    for app in apps:
        spec = applications.get(app)
        if not isinstance(spec, Mapping):
            problems.append(f"{app}: not in the model")
            continue
        own = _principal_units(spec)
        if units and app in units and len(own) != units[app]:
            problems.append(f"{app}: {len(own)} units, waiting for {units[app]}")
        for name, unit in own.items():
            every[name] = unit
            for sub, sub_unit in (unit.get("subordinates") or {}).items():
                if sub.split("/")[0] in apps and isinstance(sub_unit, Mapping):
                    every[sub] = sub_unit
        for principal in spec.get("subordinate-to") or []:
            if principal not in applications:
                continue
            for name, unit in _principal_units(applications[principal]).items():
                subs = unit.get("subordinates") or {}
                if not any(s.split("/")[0] == app for s in subs):
                    problems.append(f"{name}: no {app} subordinate yet")
    for name in sorted(every, key=_unit_key):
        unit = every[name]
        workload = unit.get("workload-status") or {}
        agent = unit.get("juju-status") or {}
        state = (workload.get("current") or "unknown", agent.get("current") or "unknown")
        if state != ("active", "idle"):
            message = workload.get("message") or agent.get("message") or ""
            problems.append(f"{name}: {state[0]}/{state[1]}" + (f": {message}" if message else ""))
    return problems


def _unit_key(name: str) -> tuple[str, int]:
    app, _, number = name.partition("/")
    return (app, int(number) if number.isdigit() else -1)


def settle_failure(timeout: float, problems: Sequence[str], status_text: str) -> str:
    """The message of a wait that timed out: what was unsettled, then ``juju status``."""
    lines = [f"the model did not settle within {timeout:.0f}s:"]
    lines += [f"  {problem}" for problem in problems] or [
        f"  (settled at times, never for {IDLE_PERIOD}s in a row)"
    ]
    lines += ["", "juju status:", status_text.rstrip() or "(empty)"]
    return "\n".join(lines)


async def wait_active(
    ops_test: OpsTest, *, timeout: float, units: Mapping[str, int] | None = None
) -> None:
    """Wait until every kaji unit is active and idle (with exactly ``units`` units per app).

    The model must stay settled for IDLE_PERIOD. Blocked and error states do not end the
    wait early (a failed download is retried); on timeout the failure carries ``juju status``,
    which is also printed.
    """
    assert ops_test.model is not None
    deadline = time.monotonic() + timeout
    settled_since: float | None = None
    problems: list[str] = []
    while True:
        rc, out, err = await ops_test.juju("status", "--format", "json")
        now = time.monotonic()
        try:
            if rc != 0:
                raise ValueError(f"exit {rc}: {(err or out).strip()}")
            problems = unsettled(json.loads(out), APPS, units)
        except ValueError as exc:  # json.JSONDecodeError is one; the controller may be busy
            problems = [f"juju status failed: {exc}"]
        if problems:
            settled_since = None
        elif settled_since is None:
            settled_since = now
        elif now - settled_since >= IDLE_PERIOD:
            return
        # At the deadline a model that is unsettled fails; one that has just settled gets
        # IDLE_PERIOD more to prove it stays so.
        if now >= deadline and (problems or now >= deadline + IDLE_PERIOD):
            _, text, err = await ops_test.juju("status", "--relations")
            message = settle_failure(timeout, problems, text or err)
            print(message)
            raise AssertionError(message)
        await asyncio.sleep(STATUS_INTERVAL)


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

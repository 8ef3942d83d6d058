"""The default bundle on a real controller: a healthy cluster, not just green Juju statuses.

Deploys bundles/k8s.yaml (etcd x3, control-plane x1, worker x2, cni), then checks nodes and
system pods, pod traffic across workers, Services and cluster DNS, etcd health, that anonymous
requests are refused, and that the cluster grows (add a worker) and shrinks (remove a worker,
whose Node is deleted; remove an etcd member) while staying healthy. Tests run in order and
share one model.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from integration_support import (
    API_PORT,
    CLUSTER_DOMAIN,
    CONTROL_PLANE,
    ETCD,
    ETCD_HEALTH,
    ETCD_MEMBER_LIST,
    ETCD_MEMBERS_KEY,
    KUBE_TIMEOUT,
    KUBELET_PORT,
    NODE_GRACE,
    REFUSED,
    SCALE_TIMEOUT,
    TEST_IMAGE,
    WORKER,
    Kubectl,
    assert_workers_ready,
    condition,
    curl_status,
    deploy_bundle,
    eventually,
    fetch_kubeconfig,
    https,
    internal_ip,
    kubeconfig_path,
    leader,
    parse_members,
    public_addresses,
    run_action,
    truthy,
    unit_addresses,
    unit_names,
    wait_active,
)

if TYPE_CHECKING:
    from pytest_operator.plugin import OpsTest

NAMESPACE = "kaji-integration"
ECHO = "kaji-echo"
ECHO_PORT = 8080


def url(address: str, port: int, path: str = "/") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}{path}"


def echo_manifests(namespace: str, replicas: int) -> list[dict[str, Any]]:
    """A busybox HTTP server answering with its pod name, one pod per node, and its Service."""
    labels = {"app": ECHO}
    script = (
        'mkdir -p /www && echo "$POD_NAME" > /www/index.html '
        f"&& exec httpd -f -p {ECHO_PORT} -h /www"
    )
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": ECHO, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "affinity": {
                            "podAntiAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "labelSelector": {"matchLabels": labels},
                                        "topologyKey": "kubernetes.io/hostname",
                                    }
                                ]
                            }
                        },
                        "containers": [
                            {
                                "name": "echo",
                                "image": TEST_IMAGE,
                                "command": ["sh", "-c", script],
                                "env": [
                                    {
                                        "name": "POD_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                    }
                                ],
                                "ports": [{"containerPort": ECHO_PORT}],
                                "readinessProbe": {
                                    "tcpSocket": {"port": ECHO_PORT},
                                    "periodSeconds": 2,
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ECHO, "namespace": namespace},
            "spec": {
                "selector": labels,
                "ports": [{"port": 80, "targetPort": ECHO_PORT, "protocol": "TCP"}],
            },
        },
    ]


async def echo_pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = (
        await kubectl.json("get", "pods", "-n", namespace, "-l", f"app={ECHO}")
    )["items"]
    return pods


async def wget(kubectl: Kubectl, namespace: str, pod: str, target: str) -> str:
    """Fetch ``target`` from inside ``pod`` (busybox wget, 5 s timeout)."""
    out = await kubectl.exec(namespace, pod, "wget", "-q", "-O", "-", "-T", "5", target)
    return out.strip()


async def etcd_members(ops_test: OpsTest, action: str) -> list[dict[str, Any]]:
    results = await run_action(ops_test, f"{ETCD}/leader", action)
    assert ETCD_MEMBERS_KEY in results, f"etcd {action} returned {sorted(results)}"
    return parse_members(results[ETCD_MEMBERS_KEY])


def member_hosts(member: dict[str, Any]) -> set[str]:
    """Every host named in a member's URLs (peer and client)."""
    text = " ".join(str(v) for v in member.values())
    return set(re.findall(r"https?://\[?([0-9A-Za-z.:-]+?)\]?:\d+", text))


async def assert_etcd_healthy(ops_test: OpsTest) -> None:
    """health: every member healthy; member-list: exactly the etcd units, by address."""
    units = await unit_addresses(ops_test, ETCD)
    health = await etcd_members(ops_test, ETCD_HEALTH)
    unhealthy = [m for m in health if not truthy(m.get("healthy"))]
    assert not unhealthy, f"unhealthy etcd members: {unhealthy}"
    assert len(health) == len(units), f"{len(health)} members for etcd units {sorted(units)}"
    members = await etcd_members(ops_test, ETCD_MEMBER_LIST)
    assert len(members) == len(units), f"members {members} for etcd units {sorted(units)}"
    for unit, addresses in units.items():
        owners = [m for m in members if member_hosts(m) & addresses]
        assert len(owners) == 1, f"{unit} ({sorted(addresses)}) is not one member of {members}"


@pytest.mark.abort_on_fail
@pytest.mark.skip_if_deployed
async def test_deploy_bundle(charms: dict[str, Path], ops_test: OpsTest) -> None:
    await deploy_bundle(ops_test, charms)
    for app, count in ((ETCD, 3), (CONTROL_PLANE, 1), (WORKER, 2)):
        assert len(await unit_names(ops_test, app)) == count, app


@pytest.mark.abort_on_fail
async def test_get_kubeconfig(ops_test: OpsTest) -> None:
    path = await fetch_kubeconfig(ops_test, kubeconfig_path(ops_test))
    out = await Kubectl(ops_test, path).run("version", "-o", "json")
    assert '"serverVersion"' in out


@pytest.mark.abort_on_fail
async def test_every_worker_is_a_ready_node(ops_test: OpsTest, kubectl: Kubectl) -> None:
    async def check() -> None:
        await assert_workers_ready(ops_test, kubectl)

    await eventually(check, timeout=KUBE_TIMEOUT, what="every worker a Ready node")


async def test_kube_system_pods_running(kubectl: Kubectl) -> None:
    async def check() -> None:
        pods = (await kubectl.json("get", "pods", "-n", "kube-system"))["items"]
        assert pods, "kube-system has no pods (cluster DNS is not deployed)"
        bad = {
            p["metadata"]["name"]: (p["status"].get("phase"), condition(p, "Ready"))
            for p in pods
            if p["status"].get("phase") != "Running" or condition(p, "Ready") != "True"
        }
        assert not bad, f"kube-system pods not Running and Ready: {bad}"

    await eventually(check, timeout=KUBE_TIMEOUT, what="kube-system pods Running")


@pytest.mark.abort_on_fail
async def test_pods_spread_over_workers(kubectl: Kubectl, namespace: str) -> None:
    await kubectl.apply(echo_manifests(namespace, replicas=2))
    await kubectl.run(
        "rollout", "status", f"deployment/{ECHO}", "-n", namespace, f"--timeout={KUBE_TIMEOUT}s"
    )
    pods = await echo_pods(kubectl, namespace)
    assert len(pods) == 2
    assert all(p["status"].get("podIP") for p in pods), "echo pods without IPs"
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 2, f"anti-affinity ignored: both echo pods on {nodes}"


async def test_pods_reach_each_other_across_nodes(kubectl: Kubectl, namespace: str) -> None:
    pods = await echo_pods(kubectl, namespace)
    for src, dst in itertools.permutations(pods, 2):
        name = dst["metadata"]["name"]
        target = url(dst["status"]["podIP"], ECHO_PORT)

        async def check(src: dict[str, Any] = src, target: str = target, name: str = name) -> None:
            assert await wget(kubectl, namespace, src["metadata"]["name"], target) == name

        await eventually(
            check,
            timeout=120,
            what=f"{src['spec']['nodeName']} -> {dst['spec']['nodeName']} pod {target}",
        )


async def test_service_cluster_ip_reaches_every_pod(kubectl: Kubectl, namespace: str) -> None:
    service = await kubectl.json("get", "service", ECHO, "-n", namespace)
    cluster_ip = service["spec"]["clusterIP"]
    pods = await echo_pods(kubectl, namespace)
    expected = {p["metadata"]["name"] for p in pods}
    client = pods[0]["metadata"]["name"]
    seen: set[str] = set()
    for _ in range(40):
        seen.add(await wget(kubectl, namespace, client, url(cluster_ip, 80)))
        if seen >= expected:
            break
    assert seen == expected, f"ClusterIP {cluster_ip} answered from {seen}, pods {expected}"


async def test_cluster_dns_resolves_the_service(kubectl: Kubectl, namespace: str) -> None:
    service = await kubectl.json("get", "service", ECHO, "-n", namespace)
    cluster_ip = service["spec"]["clusterIP"]
    fqdn = f"{ECHO}.{namespace}.svc.{CLUSTER_DOMAIN}"
    pods = await echo_pods(kubectl, namespace)
    names = {p["metadata"]["name"] for p in pods}
    client = pods[-1]["metadata"]["name"]

    async def check() -> None:
        answer = await kubectl.exec(namespace, client, "nslookup", fqdn)
        assert cluster_ip in answer, f"nslookup {fqdn}: {answer}"
        assert await wget(kubectl, namespace, client, f"http://{fqdn}/") in names

    await eventually(check, timeout=120, what=f"DNS {fqdn} -> {cluster_ip}")


async def test_etcd_members_all_healthy(ops_test: OpsTest) -> None:
    await assert_etcd_healthy(ops_test)


async def test_anonymous_api_requests_refused(ops_test: OpsTest) -> None:
    worker = (await unit_names(ops_test, WORKER))[0]
    for unit, address in (await public_addresses(ops_test, CONTROL_PLANE)).items():
        target = https(address, API_PORT, "/api")
        code = await curl_status(ops_test, worker, target)
        assert code in REFUSED, f"anonymous {target} ({unit}) from {worker}: HTTP {code}"


async def test_anonymous_kubelet_requests_refused(ops_test: OpsTest, kubectl: Kubectl) -> None:
    control_plane = (await unit_names(ops_test, CONTROL_PLANE))[0]
    for unit, node in (await assert_workers_ready(ops_test, kubectl)).items():
        for path in ("/pods", "/metrics"):
            target = https(internal_ip(node), KUBELET_PORT, path)
            code = await curl_status(ops_test, control_plane, target)
            assert code in REFUSED, f"anonymous {target} ({unit}): HTTP {code}"


@pytest.mark.abort_on_fail
async def test_add_worker_gives_a_ready_node(
    ops_test: OpsTest, kubectl: Kubectl, namespace: str
) -> None:
    before = await unit_names(ops_test, WORKER)
    await ops_test.juju("add-unit", WORKER, check=True)
    await wait_active(ops_test, timeout=SCALE_TIMEOUT, units={WORKER: len(before) + 1})
    (new_unit,) = set(await unit_names(ops_test, WORKER)) - set(before)

    async def check() -> dict[str, Any]:
        return (await assert_workers_ready(ops_test, kubectl))[new_unit]

    node = await eventually(check, timeout=KUBE_TIMEOUT, what=f"{new_unit} a Ready node")

    # A pod on the new node reaches the echo pods on the old ones, directly and by Service.
    hostname = node["metadata"]["labels"]["kubernetes.io/hostname"]
    probe = "probe-new-node"
    await kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": probe, "namespace": namespace},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": hostname},
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "probe", "image": TEST_IMAGE, "command": ["sleep", "3600"]}
                ],
            },
        }
    )
    await kubectl.run(
        "wait",
        "-n",
        namespace,
        f"pod/{probe}",
        "--for=condition=Ready",
        f"--timeout={KUBE_TIMEOUT}s",
    )
    pods = await echo_pods(kubectl, namespace)
    for pod in pods:

        async def reach(pod: dict[str, Any] = pod) -> None:
            target = url(pod["status"]["podIP"], ECHO_PORT)
            assert await wget(kubectl, namespace, probe, target) == pod["metadata"]["name"]

        await eventually(reach, timeout=120, what=f"{new_unit} -> {pod['spec']['nodeName']}")
    fqdn = f"http://{ECHO}.{namespace}.svc.{CLUSTER_DOMAIN}/"
    assert await wget(kubectl, namespace, probe, fqdn) in {p["metadata"]["name"] for p in pods}


@pytest.mark.abort_on_fail
async def test_remove_worker_deletes_its_node(ops_test: OpsTest, kubectl: Kubectl) -> None:
    """The control-plane leader deletes a departed worker's Node; the others stay Ready."""
    units = await unit_names(ops_test, WORKER)
    assert len(units) >= 2, f"need two workers to remove one: {units}"
    removed = units[-1]
    nodes = await assert_workers_ready(ops_test, kubectl)
    gone = nodes[removed]["metadata"]["name"]
    kept = {nodes[unit]["metadata"]["name"] for unit in units[:-1]}
    await ops_test.juju("remove-unit", removed, "--no-prompt", check=True)
    await wait_active(ops_test, timeout=SCALE_TIMEOUT, units={WORKER: len(units) - 1})

    async def check() -> None:
        names = {n["metadata"]["name"] for n in (await kubectl.json("get", "nodes"))["items"]}
        assert gone not in names, f"{removed}'s node {gone} is still in the cluster: {names}"
        assert names == kept, f"nodes {sorted(names)}, expected the remaining {sorted(kept)}"

    await eventually(check, timeout=KUBE_TIMEOUT, what=f"{removed}'s node {gone} deleted")
    # The survivors stay Ready well past the grace period after the removal.
    await asyncio.sleep(2 * NODE_GRACE)
    remaining = await assert_workers_ready(ops_test, kubectl)
    assert set(remaining) == set(units[:-1]), f"worker units now {sorted(remaining)}"


async def test_remove_etcd_unit_shrinks_the_cluster(ops_test: OpsTest, kubectl: Kubectl) -> None:
    units = await unit_names(ops_test, ETCD)
    etcd_leader = await leader(ops_test, ETCD)
    removed = next(u for u in reversed(units) if u != etcd_leader)
    removed_addresses = (await unit_addresses(ops_test, ETCD))[removed]
    await ops_test.juju("remove-unit", removed, "--destroy-storage", "--no-prompt", check=True)
    await wait_active(ops_test, timeout=SCALE_TIMEOUT, units={ETCD: len(units) - 1})

    await assert_etcd_healthy(ops_test)
    members = await etcd_members(ops_test, ETCD_MEMBER_LIST)
    stale = [m for m in members if member_hosts(m) & removed_addresses]
    assert not stale, f"{removed} is still a member: {stale}"

    # The API still reads and writes through the smaller etcd cluster.
    await kubectl.run("get", "nodes")
    name = "kaji-etcd-shrunk"
    await kubectl.run("create", "configmap", name, "-n", "default", "--from-literal=k=v")
    await kubectl.run("delete", "configmap", name, "-n", "default")

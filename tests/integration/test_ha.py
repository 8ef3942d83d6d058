"""The HA overlay: three control planes, and the cluster survives losing the leader.

Deploys bundles/k8s.yaml with bundles/overlays/ha.yaml in a model of its own, checks every
control-plane unit serves the API, removes the control-plane leader, and checks every kubelet
keeps talking to the API (node leases keep renewing, nodes stay Ready past the grace period)
and the remaining control planes still schedule and run new pods.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from integration_support import (
    API_PORT,
    CONTROL_PLANE,
    HA_OVERLAY,
    KUBE_TIMEOUT,
    NODE_GRACE,
    SCALE_TIMEOUT,
    TEST_IMAGE,
    Kubectl,
    assert_workers_ready,
    deploy_bundle,
    eventually,
    fetch_kubeconfig,
    https,
    kubeconfig_path,
    leader,
    public_addresses,
    unit_names,
    wait_active,
)

if TYPE_CHECKING:
    from pytest_operator.plugin import OpsTest

NAMESPACE = "kaji-integration-ha"
HA_CONTROL_PLANES = 3


async def node_lease_renewals(kubectl: Kubectl) -> dict[str, str]:
    """Node name -> renewTime of its kubelet's Lease in kube-node-lease."""
    leases = (await kubectl.json("get", "leases", "-n", "kube-node-lease"))["items"]
    return {lease["metadata"]["name"]: str(lease["spec"].get("renewTime", "")) for lease in leases}


async def assert_api_served_by(kubectl: Kubectl, addresses: dict[str, str]) -> None:
    """Every unit answers /readyz with the admin credentials, its certificate valid for it."""
    for unit, address in addresses.items():
        out = await kubectl.run(
            "--server", https(address, API_PORT, ""), "get", "--raw", "/readyz"
        )
        assert out.strip() == "ok", f"{unit} ({address}) /readyz: {out!r}"


@pytest.mark.abort_on_fail
@pytest.mark.skip_if_deployed
async def test_deploy_ha_bundle(charms: dict[str, Path], ops_test: OpsTest) -> None:
    await deploy_bundle(ops_test, charms, HA_OVERLAY)
    assert len(await unit_names(ops_test, CONTROL_PLANE)) == HA_CONTROL_PLANES


@pytest.mark.abort_on_fail
async def test_every_control_plane_serves_the_api(ops_test: OpsTest) -> None:
    kubectl = Kubectl(ops_test, await fetch_kubeconfig(ops_test, kubeconfig_path(ops_test)))
    await assert_api_served_by(kubectl, await public_addresses(ops_test, CONTROL_PLANE))

    async def check() -> None:
        await assert_workers_ready(ops_test, kubectl)

    await eventually(check, timeout=KUBE_TIMEOUT, what="every worker a Ready node")


@pytest.mark.abort_on_fail
async def test_losing_the_leader_keeps_the_api_reachable(
    ops_test: OpsTest, kubectl: Kubectl
) -> None:
    old_leader = await leader(ops_test, CONTROL_PLANE)
    await ops_test.juju("remove-unit", old_leader, "--no-prompt", check=True)
    removed_at = time.monotonic()
    await wait_active(
        ops_test, timeout=SCALE_TIMEOUT, units={CONTROL_PLANE: HA_CONTROL_PLANES - 1}
    )
    assert old_leader not in await unit_names(ops_test, CONTROL_PLANE)
    assert await leader(ops_test, CONTROL_PLANE) != old_leader

    # The new leader hands out a working kubeconfig; each remaining unit serves the API.
    await fetch_kubeconfig(ops_test, kubeconfig_path(ops_test))
    await assert_api_served_by(kubectl, await public_addresses(ops_test, CONTROL_PLANE))

    # Every kubelet still reaches the API: its node lease keeps renewing...
    nodes = await assert_workers_ready(ops_test, kubectl)
    before = await node_lease_renewals(kubectl)
    names = [node["metadata"]["name"] for node in nodes.values()]
    missing = [name for name in names if name not in before]
    assert not missing, f"no node lease for {missing}"

    async def renewed() -> None:
        now = await node_lease_renewals(kubectl)
        stale = [name for name in names if now.get(name) == before[name]]
        assert not stale, f"node leases not renewed since the leader left: {stale}"

    await eventually(renewed, timeout=120, what="node leases renewed")

    # ...and no node goes NotReady once the grace period has passed since the removal.
    await asyncio.sleep(max(0.0, 2 * NODE_GRACE - (time.monotonic() - removed_at)))
    await assert_workers_ready(ops_test, kubectl)


async def test_new_pods_run_without_the_old_leader(kubectl: Kubectl, namespace: str) -> None:
    """Scheduler and controller manager work on the remaining units: a Deployment rolls out."""
    labels = {"app": "kaji-ha-probe"}
    manifests: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "kaji-ha-probe", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {"name": "probe", "image": TEST_IMAGE, "command": ["sleep", "3600"]}
                        ],
                    },
                },
            },
        },
    ]
    await kubectl.apply(manifests)
    await kubectl.run(
        "rollout",
        "status",
        "deployment/kaji-ha-probe",
        "-n",
        namespace,
        f"--timeout={KUBE_TIMEOUT}s",
    )

"""kube-control: node identity, certificates, one or three control planes, failover."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from builders import (
    ADDRESS,
    NODE,
    UNIT,
    cni_relation,
    endpoint,
    joined,
    kube_control,
    provider_app,
    published_csr,
    service,
    sign,
    text,
)
from ops import testing

from kaji import pki
from kaji.host import Host, RecordingManager
from kaji.interfaces.kube_control import KubeControlRequirerUnit, expected_node_identity

LB = "/etc/kaji/apiserver-lb.cfg"


def kubeconfig(host: Host, path: str) -> dict:
    return json.loads(text(host, path))


def test_unit_publishes_its_own_node_identity(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca))
    state = ctx.run(ctx.on.relation_joined(relation), testing.State(relations=[relation]))
    data = KubeControlRequirerUnit.from_databag(state.get_relation(relation.id).local_unit_data)
    assert data.node_name == NODE
    assert data.addresses == (ADDRESS,)
    assert pki.read_csr(data.kubelet_csr) == expected_node_identity(NODE, [ADDRESS])
    key = machine.path("/etc/kubernetes/pki/node.key")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert pki.csr_matches_key(data.kubelet_csr, key.read_text())
    assert "PRIVATE KEY" not in json.dumps(state.get_relation(relation.id).local_unit_data)
    assert state.unit_status == testing.WaitingStatus("waiting for the node certificate")


def test_no_relation_blocks_but_prepares_the_runtime(ctx: testing.Context, machine: Host) -> None:
    state = ctx.run(ctx.on.install(), testing.State())
    assert state.unit_status == testing.BlockedStatus("needs a control plane: relate kube-control")
    config = text(machine, "/etc/containerd/config.toml")
    assert 'sandbox_image = "registry.k8s.io/pause:3.10"' in config
    assert "br_netfilter" in text(machine, "/etc/modules-load.d/kaji-worker.conf")
    assert "net.ipv4.ip_forward = 1" in text(machine, "/etc/sysctl.d/kaji-worker.conf")
    assert service(machine, "containerd") is not None
    assert service(machine, "kubelet") is None


def test_control_plane_without_data_waits(ctx: testing.Context, machine: Host) -> None:
    relation = kube_control()
    state = ctx.run(ctx.on.relation_joined(relation), testing.State(relations=[relation]))
    assert state.unit_status == testing.WaitingStatus(
        "waiting for cluster data from control-plane"
    )


def test_one_control_plane_is_used_directly(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, cert = joined(ctx, ca, units=1)
    assert state.unit_status.name == "active"
    assert state.unit_status.message.startswith(f"node {NODE}")
    for path in ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/kube-proxy.conf"):
        cluster = kubeconfig(machine, path)["clusters"][0]["cluster"]
        assert cluster["server"] == endpoint(1)
        assert "tls-server-name" not in cluster
    assert text(machine, "/etc/kubernetes/pki/node.crt") == cert
    assert text(machine, "/etc/kubernetes/pki/ca.crt") == ca.cert_pem
    assert not machine.exists(LB)
    assert service(machine, "kaji-apiserver-lb") is None
    kubelet = service(machine, "kubelet")
    assert kubelet is not None
    argv = kubelet["spec"].argv
    assert f"--hostname-override={NODE}" in argv
    assert f"--node-ip={ADDRESS}" in argv


def test_three_control_planes_go_through_the_local_balancer(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, units=3)
    assert state.unit_status.name == "active"
    lb = text(machine, LB)
    for n in (1, 2, 3):
        assert f"10.0.0.{n}:6443 check" in lb
    assert f"bind {machine.loopback_address}:16443" in lb
    for path in ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/kube-proxy.conf"):
        cluster = kubeconfig(machine, path)["clusters"][0]["cluster"]
        assert cluster["server"] == f"https://{machine.loopback_address}:16443"
        assert cluster["tls-server-name"] == "kubernetes"
    assert service(machine, "kaji-apiserver-lb") is not None


def test_endpoint_change_reloads_the_balancer_without_restarting_kubelet(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, cert = joined(ctx, ca, units=3)
    kubelet_before = service(machine, "kubelet")
    lb_before = service(machine, "kaji-apiserver-lb")
    assert kubelet_before
    assert lb_before
    relation = kube_control(provider_app(ca, {UNIT: cert}), units=2)
    state = ctx.run(
        ctx.on.relation_departed(relation, remote_unit=2),
        testing.State(relations=[relation, cni_relation()]),
    )
    assert state.unit_status.name == "active"
    assert "10.0.0.3" not in text(machine, LB)
    lb_after = service(machine, "kaji-apiserver-lb")
    kubelet_after = service(machine, "kubelet")
    assert lb_after
    assert kubelet_after
    assert lb_after["reloads"] == lb_before["reloads"] + 1
    assert lb_after["restarts"] == lb_before["restarts"]
    assert kubelet_after["restarts"] == kubelet_before["restarts"]
    assert kubelet_after["starts"] == kubelet_before["starts"]


def test_going_from_three_to_one_endpoint_drops_the_balancer(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    _, cert = joined(ctx, ca, units=3)
    relation = kube_control(provider_app(ca, {UNIT: cert}), units=1)
    state = ctx.run(
        ctx.on.relation_departed(relation, remote_unit=1),
        testing.State(relations=[relation, cni_relation()]),
    )
    assert state.unit_status.name == "active"
    assert not machine.exists(LB)
    assert service(machine, "kaji-apiserver-lb") is None
    cluster = kubeconfig(machine, "/etc/kubernetes/kubelet.conf")["clusters"][0]["cluster"]
    assert cluster["server"] == endpoint(1)


def test_loadbalancer_address_wins_over_the_local_balancer(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, units=3, config={"loadbalancer-address": "10.9.9.9:443"})
    assert state.unit_status.name == "active"
    assert not machine.exists(LB)
    cluster = kubeconfig(machine, "/etc/kubernetes/kubelet.conf")["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.9.9.9:443"


def test_a_certificate_arriving_late_completes_the_node(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca), units=1)
    state = ctx.run(
        ctx.on.relation_changed(relation), testing.State(relations=[relation, cni_relation()])
    )
    assert state.unit_status == testing.WaitingStatus("waiting for the node certificate")
    assert not machine.exists("/etc/kubernetes/kubelet.conf")
    assert service(machine, "kubelet") is None
    # Several unrelated hooks go by; the CSR stays the same (no churn in relation data).
    csr = published_csr(state)
    for event in (ctx.on.update_status(), ctx.on.config_changed()):
        state = ctx.run(event, state)
        assert published_csr(state) == csr
    late = kube_control(provider_app(ca, {UNIT: sign(csr, ca)}), units=1)
    state = ctx.run(
        ctx.on.relation_changed(late),
        testing.State(relations=[late, *[r for r in state.relations if r.endpoint == "cni"]]),
    )
    assert state.unit_status.name == "active"
    assert service(machine, "kubelet") is not None


def test_a_refused_csr_leaves_the_node_waiting(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    """The control plane signed something else (another key) or another CA signed ours."""
    relation = kube_control(provider_app(ca), units=1)
    state = ctx.run(ctx.on.relation_changed(relation), testing.State(relations=[relation]))
    other_key = pki.generate_private_key()
    stranger = pki.create_csr(other_key, expected_node_identity(NODE, [ADDRESS]))
    wrong_ca = pki.create_ca("another-cluster")
    for cert in (sign(stranger, ca), sign(published_csr(state), wrong_ca)):
        bad = kube_control(provider_app(ca, {UNIT: cert}), units=1)
        state = ctx.run(ctx.on.relation_changed(bad), testing.State(relations=[bad]))
        assert state.unit_status == testing.WaitingStatus(
            "waiting for the node certificate (the one control-plane published for worker/0"
            " does not match this node's request)"
        )
        assert not machine.exists("/etc/kubernetes/pki/node.crt")
        assert not machine.exists("/etc/kubernetes/kubelet.conf")


def test_a_certificate_for_another_unit_is_not_taken(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca), units=1)
    state = ctx.run(ctx.on.relation_changed(relation), testing.State(relations=[relation]))
    cert = sign(published_csr(state), ca)
    other = kube_control(provider_app(ca, {"worker/1": cert}), units=1)
    state = ctx.run(ctx.on.relation_changed(other), testing.State(relations=[other]))
    assert state.unit_status == testing.WaitingStatus("waiting for the node certificate")


@pytest.mark.parametrize("event", ["config_changed", "update_status", "upgrade_charm"])
def test_second_reconcile_changes_nothing(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority, event: str
) -> None:
    state, _ = joined(ctx, ca, units=3)
    stats = machine.stats.as_dict()
    kubelet = service(machine, "kubelet")
    again = ctx.run(getattr(ctx.on, event)(), state)
    assert machine.stats.files_written == stats["files_written"]
    assert machine.stats.as_dict() == stats
    assert service(machine, "kubelet") == kubelet
    for relation in state.relations:
        assert again.get_relation(relation.id).local_unit_data == relation.local_unit_data
    assert again.unit_status == state.unit_status


def test_update_status_restarts_a_dead_service(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, units=1)
    recorder = RecordingManager(machine.path("/var/lib/kaji/worker/recorded-services"))
    manager = recorder if recorder.get("kubelet") else machine.services
    manager.stop("kubelet")
    state = ctx.run(ctx.on.update_status(), state)
    record = service(machine, "kubelet")
    assert record is not None
    assert record["running"] is True
    assert record["starts"] == 2
    assert state.unit_status.name == "active"


def test_update_status_reconciles_when_the_certificate_nears_expiry(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, units=1)
    relation = state.get_relation(7)
    csr = published_csr(state)
    short = sign(csr, ca, validity_days=20)
    rel = kube_control(provider_app(ca, {UNIT: short}), units=1)
    others = [r for r in state.relations if r.id != relation.id]
    state = ctx.run(ctx.on.relation_changed(rel), testing.State(relations=[rel, *others]))
    assert "node certificate expires" in state.unit_status.message
    # The remembered outcome carries the deadline: update-status does not hide it.
    again = ctx.run(ctx.on.update_status(), state)
    assert again.unit_status == state.unit_status


def test_renewed_certificate_restarts_kubelet_and_kube_proxy(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, cert = joined(ctx, ca, units=1)
    before = {name: service(machine, name) for name in ("kubelet", "kube-proxy")}
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    renewed = sign(published_csr(state), ca, now=later)
    assert renewed != cert
    relation = kube_control(provider_app(ca, {UNIT: renewed}), units=1)
    state = ctx.run(
        ctx.on.relation_changed(relation), testing.State(relations=[relation, cni_relation()])
    )
    assert text(machine, "/etc/kubernetes/pki/node.crt") == renewed
    for name, record in before.items():
        after = service(machine, name)
        assert record
        assert after
        assert after["restarts"] == record["restarts"] + 1, name


def test_kubelet_configuration(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    config = {
        "node-labels": "team=ml node.kubernetes.io/pool=gpu",
        "node-taints": "dedicated=gpu:NoSchedule",
        "kubelet-extra-config": "maxPods: 50",
    }
    _state, _ = joined(ctx, ca, units=1, config=config)
    kubelet = yaml.safe_load(text(machine, "/etc/kubernetes/kubelet-config.yaml"))
    assert kubelet["kind"] == "KubeletConfiguration"
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert kubelet["authentication"]["webhook"]["enabled"] is True
    assert kubelet["authentication"]["x509"]["clientCAFile"] == str(
        machine.path("/etc/kubernetes/pki/ca.crt")
    )
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["clusterDNS"] == ["10.152.183.10"]
    assert kubelet["clusterDomain"] == "cluster.local"
    assert kubelet["cgroupDriver"] == "cgroupfs"  # the sandbox has no cgroup v2 / systemd
    assert kubelet["rotateCertificates"] is True
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["maxPods"] == 50
    assert kubelet["registerWithTaints"] == [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    ]
    assert kubelet["containerRuntimeEndpoint"] == (
        f"unix://{machine.path('/run/containerd/containerd.sock')}"
    )
    kubelet_service = service(machine, "kubelet")
    assert kubelet_service is not None
    assert "--node-labels=node.kubernetes.io/pool=gpu,team=ml" in kubelet_service["spec"].argv


def test_cgroup_driver_follows_the_host(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    machine.write_file("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    machine.ensure_directory("/run/systemd/system")
    joined(ctx, ca, units=1)
    kubelet = yaml.safe_load(text(machine, "/etc/kubernetes/kubelet-config.yaml"))
    assert kubelet["cgroupDriver"] == "systemd"
    assert "SystemdCgroup = true" in text(machine, "/etc/containerd/config.toml")


def test_image_registry_and_mirrors_reach_containerd(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    config = {"registry-mirrors": "docker.io=https://mirror.example"}
    relation = kube_control(provider_app(ca, image_registry="registry.internal:5000/k8s"))
    ctx.run(ctx.on.config_changed(), testing.State(relations=[relation], config=config))
    containerd = text(machine, "/etc/containerd/config.toml")
    assert 'sandbox_image = "registry.internal:5000/k8s/pause:3.10"' in containerd
    hosts = text(machine, "/etc/containerd/certs.d/docker.io/hosts.toml")
    assert 'server = "https://registry-1.docker.io"' in hosts
    assert '[host."https://mirror.example"]' in hosts
    # Mirrors change: hosts.toml files follow; containerd is not restarted for it.
    before = service(machine, "containerd")
    config = {"registry-mirrors": "quay.io=https://q.example"}
    ctx.run(ctx.on.config_changed(), testing.State(relations=[relation], config=config))
    assert not machine.exists("/etc/containerd/certs.d/docker.io/hosts.toml")
    assert machine.exists("/etc/containerd/certs.d/quay.io/hosts.toml")
    assert service(machine, "containerd") == before


def test_malformed_cluster_data_waits_naming_the_sender_and_the_key(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    data = {**provider_app(ca), "service-cidr": '"10.152.183.0/33"'}
    relation = kube_control(data)
    state = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0), testing.State(relations=[relation])
    )
    assert isinstance(state.unit_status, testing.WaitingStatus)
    assert state.unit_status.message.startswith(
        "waiting for valid cluster data: control-plane sent a bad 'service-cidr' ("
    )
    assert service(machine, "kubelet") is None


def test_bad_api_endpoints_are_named_and_the_good_ones_used(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca), units=2)
    bad = {**relation.remote_units_data, 0: {"api-endpoint": '"http://10.0.0.1:6443"'}}
    relation = dataclasses.replace(relation, remote_units_data=bad)
    state = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0), testing.State(relations=[relation])
    )
    # control-plane/1's endpoint is good: the node goes on (to its certificate) with it alone.
    assert state.unit_status == testing.WaitingStatus("waiting for the node certificate")
    worse = {i: {"api-endpoint": '"https://u:p@10.0.0.9:6443"'} for i in (0, 1)}
    relation = dataclasses.replace(relation, remote_units_data=worse)
    state = ctx.run(
        ctx.on.relation_changed(relation, remote_unit=0), testing.State(relations=[relation])
    )
    assert isinstance(state.unit_status, testing.WaitingStatus)
    message = state.unit_status.message
    assert message.startswith("waiting for a valid API endpoint: control-plane/0 sent a bad")
    assert "control-plane/1 sent a bad 'api-endpoint'" in message


def test_an_unsupported_version_blocks_naming_the_sender_and_key(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    relation = kube_control(provider_app(ca, kubernetes_version="1.99.0"))
    state = ctx.run(ctx.on.config_changed(), testing.State(relations=[relation]))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith(
        "unusable 'kubernetes-version' from control-plane: 1.99.0 is not supported"
    )

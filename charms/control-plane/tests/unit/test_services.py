"""The rendered services: flags for the version, extra args, idempotence, status, cluster setup."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from builders import base_state, flags_of, service_argv
from kaji_control_plane import cluster_setup, literals
from ops import testing

from kaji import kubernetes as k8s
from kaji.host import Host, RecordingManager


def test_apiserver_flags_hold_the_security_settings(cluster, root: pathlib.Path) -> None:
    cluster.converge(base_state())
    flags = flags_of(service_argv(root, "kube-apiserver"))
    pki_dir = root / "etc/kubernetes/pki"
    assert flags["authorization-mode"] == "Node,RBAC"
    assert "NodeRestriction" in flags["enable-admission-plugins"].split(",")
    assert flags["anonymous-auth"] == "false"
    assert flags["service-account-issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert flags["service-account-key-file"] == str(pki_dir / "sa.pub")
    assert flags["service-account-signing-key-file"] == str(pki_dir / "sa.key")
    assert flags["encryption-provider-config"] == str(
        root / "etc/kubernetes/encryption-config.yaml"
    )
    assert flags["audit-policy-file"] == str(root / "etc/kubernetes/audit-policy.yaml")
    assert flags["audit-log-path"] == str(root / "var/log/kubernetes/audit.log")
    assert flags["kubelet-client-certificate"] == str(pki_dir / "apiserver-kubelet-client.crt")
    assert flags["kubelet-certificate-authority"] == str(pki_dir / "ca.crt")
    assert flags["requestheader-client-ca-file"] == str(pki_dir / "front-proxy-ca.crt")
    assert flags["proxy-client-cert-file"] == str(pki_dir / "front-proxy-client.crt")
    assert flags["service-cluster-ip-range"] == "10.152.183.0/24"
    policy = yaml.safe_load((root / "etc/kubernetes/audit-policy.yaml").read_text())
    assert policy["kind"] == "Policy"


def test_controller_manager_and_scheduler_elect_leaders_with_own_kubeconfigs(
    cluster, root: pathlib.Path
) -> None:
    cluster.converge(base_state())
    cm = flags_of(service_argv(root, "kube-controller-manager"))
    sched = flags_of(service_argv(root, "kube-scheduler"))
    assert cm["leader-elect"] == sched["leader-elect"] == "true"
    assert cm["kubeconfig"] == str(root / "etc/kubernetes/controller-manager.conf")
    assert sched["kubeconfig"] == str(root / "etc/kubernetes/scheduler.conf")
    assert cm["service-account-private-key-file"] == str(root / "etc/kubernetes/pki/sa.key")
    assert cm["use-service-account-credentials"] == "true"


@pytest.mark.parametrize("version", ["1.30.10", "1.31.4", "1.32.3", "1.33.0"])
def test_every_rendered_flag_exists_in_the_target_version(
    cluster, root: pathlib.Path, version: str
) -> None:
    cluster.converge(base_state(config={"kubernetes-version": version}))
    for name in literals.SERVICES:
        argv = service_argv(root, name)
        assert k8s.unknown_flags(name, version, k8s.argv_flags(argv)) == [], name


def test_extra_args_are_merged_in_and_win(cluster, root: pathlib.Path) -> None:
    options = {
        "api-extra-args": "v=2 profiling=true event-ttl=2h",
        "controller-manager-extra-args": "--node-monitor-grace-period=50s",
        "scheduler-extra-args": "v=4",
    }
    cluster.converge(base_state(config=options))
    api = flags_of(service_argv(root, "kube-apiserver"))
    assert (api["v"], api["profiling"], api["event-ttl"]) == ("2", "true", "2h")
    assert (
        flags_of(service_argv(root, "kube-controller-manager"))["node-monitor-grace-period"]
        == "50s"
    )
    assert flags_of(service_argv(root, "kube-scheduler"))["v"] == "4"


def test_second_reconcile_changes_nothing(cluster, root: pathlib.Path, monkeypatch) -> None:
    state = cluster.converge(base_state())
    counted: list[Host] = []
    import charm

    real = charm.host_from_environment

    def counting() -> Host:
        host = real()
        counted.append(host)
        return host

    monkeypatch.setattr(charm, "host_from_environment", counting)
    again = cluster.ctx.run(cluster.ctx.on.update_status(), state)
    host = counted[0]
    assert host.stats.files_written == 0
    assert host.stats.services_started == host.stats.services_restarted == 0
    for before, after in zip(
        sorted(state.relations, key=lambda r: r.endpoint),
        sorted(again.relations, key=lambda r: r.endpoint),
        strict=True,
    ):
        assert dict(before.local_unit_data) == dict(after.local_unit_data)
        assert dict(before.local_app_data) == dict(after.local_app_data)
    assert again.unit_status == state.unit_status


def test_config_change_restarts_only_what_changed(cluster, root: pathlib.Path) -> None:
    state = cluster.converge(base_state())
    rm = RecordingManager(root / "var/lib/kaji/services")
    state = cluster.ctx.run(
        cluster.ctx.on.config_changed(),
        testing.State(
            leader=True,
            relations=state.relations,
            secrets=state.secrets,
            config={"scheduler-extra-args": "v=3"},
        ),
    )
    assert rm.record("kube-scheduler")["restarts"] == 1
    assert rm.record("kube-apiserver")["restarts"] == 0
    assert rm.record("kube-controller-manager")["restarts"] == 0


def test_active_status_is_honest_about_the_sandbox(cluster) -> None:
    state = cluster.converge(base_state())
    assert state.unit_status == testing.ActiveStatus(
        "API https://192.0.2.0:6443 (1 control plane); "
        "services and cluster setup recorded only (sandbox)"
    )


def test_cluster_setup_manifests_are_rendered(cluster, root: pathlib.Path) -> None:
    cluster.converge(base_state(config={"image-registry": "mirror.example/k8s"}))
    manifests = root / "etc/kubernetes/manifests"
    rbac = list(yaml.safe_load_all((manifests / "rbac.yaml").read_text()))
    bindings = {d["roleRef"]["name"]: d["subjects"][0] for d in rbac}
    assert bindings["system:node-proxier"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Group",
        "name": "system:nodes",
    }
    assert bindings["system:kubelet-api-admin"]["name"] == "kube-apiserver-kubelet-client"
    dns = {d["kind"]: d for d in yaml.safe_load_all((manifests / "coredns.yaml").read_text())}
    assert dns["Service"]["spec"]["clusterIP"] == "10.152.183.10"
    image = dns["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "mirror.example/k8s/coredns/coredns:v1.11.3"
    assert "kubernetes cluster.local in-addr.arpa" in dns["ConfigMap"]["data"]["Corefile"]


def test_non_leader_does_not_apply(ctx, root: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setattr(cluster_setup, "apply_manifests", lambda *a, **k: pytest.fail("applied"))
    ctx.run(ctx.on.update_status(), base_state(leader=False))

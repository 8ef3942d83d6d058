"""Offline validation of what the charm renders, with the real tools.

kubeconfigs with ``kubectl config view --minify --raw``; systemd units with ``systemd-analyze
verify`` (empty stderr); manifests with the ``kubernetes-validate`` schemas of the target
version; certificates with ``openssl verify`` and ``openssl x509`` (SANs and subjects).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from builders import base_state, peer_bag, service_argv, worker_bag
from kaji_control_plane import cluster_setup, literals
from kaji_control_plane.config import ControlPlaneConfig
from ops import testing

from kaji import kubernetes as k8s
from kaji.host import RecordingManager, render_systemd_unit
from kaji.interfaces import kube_control as kc


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)


@pytest.fixture
def rendered(cluster, tmp_path: pathlib.Path, root: pathlib.Path):
    """A two-unit leader with one worker, converged for the default Kubernetes version."""
    version = "1.32.3"
    bags = {1: peer_bag(tmp_path / "cp1", "cp-1", ["10.0.0.2"])[0]}
    peer = testing.PeerRelation("cluster", peers_data=bags)
    kube = testing.Relation(
        "kube-control",
        remote_app_name="worker",
        remote_units_data={0: worker_bag("worker-0", ["10.0.1.5"])},
    )
    options = {"kubernetes-version": version, "extra-sans": "api.example 198.51.100.7"}
    state = cluster.converge(base_state(relations=[peer, kube], config=options))
    assert state.unit_status.name == "active", state.unit_status
    return version, state


def test_kubeconfigs_pass_kubectl(rendered, cluster, root: pathlib.Path, tmp_path) -> None:
    kubectl = _tool("kubectl")
    _, state = rendered
    cluster.ctx.run(cluster.ctx.on.action("get-kubeconfig"), state)
    action_config = tmp_path / "action.conf"
    action_config.write_text(cluster.ctx.action_results["kubeconfig"])
    paths = [
        root / f"etc/kubernetes/{n}.conf" for n in ("admin", "controller-manager", "scheduler")
    ]
    for path in [*paths, action_config]:
        result = _run(
            [kubectl, "config", "view", "--minify", "--raw", "--kubeconfig", str(path)],
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr
        view = yaml.safe_load(result.stdout)
        assert view["clusters"][0]["cluster"]["server"] == "https://192.0.2.0:6443"
        assert view["users"][0]["user"]["client-key-data"]


def test_systemd_units_verify(rendered, root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    analyze = _tool("systemd-analyze")
    units = tmp_path / "units"
    units.mkdir()
    manager = RecordingManager(root / "var/lib/kaji/services")
    for name in literals.SERVICES:
        spec = manager.get(name)
        assert spec is not None
        binary = pathlib.Path(spec.argv[0])  # the install path inside the sandbox
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
        (units / f"{name}.service").write_text(render_systemd_unit(spec))
    result = _run([analyze, "verify", *sorted(str(p) for p in units.iterdir())])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_rendered_manifests_validate(rendered, root: pathlib.Path) -> None:
    count = 0
    for path in sorted((root / "etc/kubernetes/manifests").iterdir()):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, "1.32", strict=True)
            count += 1
    assert count == 8


@pytest.mark.parametrize("minor", k8s.supported_versions())
def test_manifests_validate_for_every_supported_version(minor: str) -> None:
    from builders import default_options

    settings = ControlPlaneConfig.from_options(
        {**default_options(), "kubernetes-version": f"{minor}.0", "image-registry": "m.example/k"}
    )
    for text in cluster_setup.render_manifests(settings).values():
        for doc in yaml.safe_load_all(text):
            kubernetes_validate.validate(doc, minor, strict=True)


def test_manifest_validation_catches_errors() -> None:
    """The validator really checks: a misspelt field fails in strict mode."""
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"clusterIPs": ["10.0.0.1"], "portz": []},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.32", strict=True)


def test_validation_works_offline(tmp_path: pathlib.Path) -> None:
    """kubernetes-validate ships its schemas: it validates without any network namespace route."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to cut the network")
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 53}]}\n"
    )
    code = (
        "import sys, yaml, kubernetes_validate;"
        "kubernetes_validate.validate(yaml.safe_load(open(sys.argv[1])), '1.32', strict=True)"
    )
    result = _run([unshare, "-n", sys.executable, "-c", code, str(manifest)])
    assert result.returncode == 0, result.stderr


def _openssl_text(openssl: str, cert: pathlib.Path, *args: str) -> str:
    result = _run([openssl, "x509", "-noout", "-in", str(cert), *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_certificates_chain_and_name_the_right_identities(
    rendered, root: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    openssl = _tool("openssl")
    _, state = rendered
    pki_dir = root / "etc/kubernetes/pki"
    for name in (
        "apiserver",
        "apiserver-kubelet-client",
        "controller-manager",
        "scheduler",
        "admin",
    ):
        result = _run(
            [openssl, "verify", "-CAfile", str(pki_dir / "ca.crt"), str(pki_dir / f"{name}.crt")]
        )
        assert result.returncode == 0, result.stdout + result.stderr
    result = _run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(pki_dir / "front-proxy-ca.crt"),
            str(pki_dir / "front-proxy-client.crt"),
        ]
    )
    assert result.returncode == 0, result.stderr
    # The front-proxy client is not trusted by the cluster CA: the CAs are distinct.
    result = _run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(pki_dir / "ca.crt"),
            str(pki_dir / "front-proxy-client.crt"),
        ]
    )
    assert result.returncode != 0
    sans = _openssl_text(openssl, pki_dir / "apiserver.crt", "-ext", "subjectAltName")
    for expected in (
        "DNS:cp-0",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:api.example",
        "IP Address:192.0.2.0",
        "IP Address:10.152.183.1",
        "IP Address:198.51.100.7",
    ):
        assert expected in sans
    assert "CN = kubernetes-admin" in _openssl_text(openssl, pki_dir / "admin.crt", "-subject")
    assert "O = system:masters" in _openssl_text(openssl, pki_dir / "admin.crt", "-subject")
    usage = _openssl_text(openssl, pki_dir / "apiserver.crt", "-ext", "extendedKeyUsage")
    assert "TLS Web Server Authentication" in usage
    # The worker's node certificate.
    app = kc.read_provider_app(state.get_relations("kube-control")[0].local_app_data)
    assert app is not None
    node = tmp_path / "node.crt"
    node.write_text(app.certificates["worker/0"])
    assert _run([openssl, "verify", "-CAfile", str(pki_dir / "ca.crt"), str(node)]).returncode == 0
    subject = _openssl_text(openssl, node, "-subject")
    assert "O = system:nodes" in subject
    assert "CN = system:node:worker-0" in subject
    node_sans = _openssl_text(openssl, node, "-ext", "subjectAltName")
    assert "DNS:worker-0" in node_sans
    assert "IP Address:10.0.1.5" in node_sans


def test_service_account_key_pair_matches(rendered, root: pathlib.Path) -> None:
    openssl = _tool("openssl")
    pki_dir = root / "etc/kubernetes/pki"
    derived = _run([openssl, "pkey", "-in", str(pki_dir / "sa.key"), "-pubout"])
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout == (pki_dir / "sa.pub").read_text()


def test_flags_exist_for_the_target_version(rendered, root: pathlib.Path) -> None:
    version, _ = rendered
    for name in literals.SERVICES:
        argv = service_argv(root, name)
        assert k8s.unknown_flags(name, version, k8s.argv_flags(argv)) == []

"""Files the worker charm renders, checked by the real tools: kubectl reads its kubeconfigs,
``systemd-analyze verify`` accepts its systemd units (and containerd's drop-in)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from charm_source import load_charm_module

from kaji import kubernetes, pki
from kaji.host import Host, render_systemd_unit, run
from kaji.interfaces.kube_control import expected_node_identity


def worker_module(name: str) -> ModuleType:
    """Import ``kaji_worker.<name>`` from the worker charm's source."""
    return load_charm_module("worker", f"kaji_worker.{name}")


@pytest.fixture(scope="module")
def node_material() -> dict[str, str]:
    ca = pki.create_ca("kaji-cluster")
    key = pki.generate_private_key()
    csr = pki.create_csr(key, expected_node_identity("worker-0", ["10.0.0.9"]))
    return {"ca": ca.cert_pem, "key": key, "cert": pki.sign_csr(csr, ca, pki.Profile.PEER)}


@pytest.mark.parametrize(
    ("server", "tls_server_name"),
    [("https://10.0.0.1:6443", None), ("https://127.0.1.4:16443", "kubernetes")],
)
def test_kubeconfigs_pass_kubectl(
    tmp_path: Path,
    require_binaries: Callable[..., None],
    node_material: dict[str, str],
    server: str,
    tls_server_name: str | None,
) -> None:
    require_binaries("kubectl")
    kube = worker_module("kube")
    path = tmp_path / "kubelet.conf"
    path.write_text(
        kube.render_kubeconfig(
            server=server,
            ca_cert_pem=node_material["ca"],
            cert_pem=node_material["cert"],
            key_pem=node_material["key"],
            user="system:node:worker-0",
            tls_server_name=tls_server_name,
        )
    )
    result = run(
        ["kubectl", "config", "view", "--minify", "--raw", "--kubeconfig", str(path)],
        env={"HOME": str(tmp_path)},
    )
    view = yaml.safe_load(result.stdout)
    cluster = view["clusters"][0]["cluster"]
    assert cluster["server"] == server
    assert cluster.get("tls-server-name") == tls_server_name
    assert view["users"][0]["name"] == "system:node:worker-0"
    assert view["current-context"] == "system:node:worker-0@kaji"


def test_systemd_units_verify_cleanly(
    tmp_path: Path, require_binaries: Callable[..., None]
) -> None:
    require_binaries("systemd-analyze", "containerd", "runc", "haproxy")
    containerd = worker_module("containerd")
    apilb = worker_module("apilb")
    kube = worker_module("kube")
    host = Host(tmp_path / "machine")
    # kubelet and kube-proxy are not Debian packages: stand-in executables where the charm
    # installs the upstream binaries.
    version = kubernetes.DEFAULT_VERSION
    binaries = {}
    for name in ("kubelet", "kube-proxy"):
        binary = host.path(f"/opt/kaji/kubernetes-node/{version}/{name}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
        binaries[name] = str(binary)
    runtime = containerd.ContainerdBinaries(
        shutil.which("containerd"), shutil.which("runc"), "/usr/lib/cni"
    )
    specs = [
        containerd.service_spec(host, runtime),
        apilb.service_spec(host, shutil.which("haproxy")),
        kube.kubelet_spec(
            host,
            binaries["kubelet"],
            node_name="worker-0",
            node_ip="10.0.0.9",
            labels={"team": "ml"},
        ),
        kube.kube_proxy_spec(host, binaries["kube-proxy"]),
    ]
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for spec in specs:
        (unit_dir / spec.unit_name).write_text(render_systemd_unit(spec))
    drop_in = unit_dir / "containerd.service.d" / Path(containerd.DROP_IN).name
    drop_in.parent.mkdir()
    drop_in.write_text(containerd.DROP_IN_TEXT)
    paths = [str(unit_dir / spec.unit_name) for spec in specs]
    # The trailing ':' keeps the system's unit path (network-online.target, ...) after ours.
    env = {"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_LEVEL": "notice"}
    result = run(["systemd-analyze", "verify", *paths], env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # The drop-in was read: an invalid setting in it is reported.
    drop_in.write_text("[Service]\nKillMode=sometimes\n")
    broken = run(["systemd-analyze", "verify", paths[0]], env=env, check=False)
    assert "10-kaji.conf:2: Failed to parse kill mode" in broken.stderr

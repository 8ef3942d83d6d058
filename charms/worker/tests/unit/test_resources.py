"""Attached resources: kubelet/kube-proxy and containerd from tarballs, verified."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from builders import joined, service
from ops import testing

from kaji import pki
from kaji.host import Host


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


STUB = b"#!/bin/sh\nexit 0\n"


def test_kubernetes_node_resource_is_installed_for_the_published_version(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    node = _tarball(
        tmp_path / "node.tar.gz",
        {f"kubernetes/node/bin/{n}": STUB for n in ("kubelet", "kube-proxy", "kubectl")},
    )
    resources = {testing.Resource(name="kubernetes-node", path=node)}
    state, _ = joined(ctx, ca, resources=resources)
    assert state.unit_status.name == "active"
    installed = machine.path("/opt/kaji/kubernetes-node/1.32.3")
    for name in ("kubelet", "kube-proxy"):
        record = service(machine, name)
        assert record is not None
        assert record["spec"].argv[0] == str(installed / name)
        assert (installed / name).read_bytes() == STUB


def test_a_broken_resource_blocks_with_the_reason(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    node = _tarball(tmp_path / "node.tar.gz", {"kubernetes/node/bin/kubelet": STUB})
    resources = {testing.Resource(name="kubernetes-node", path=node)}
    state, _ = joined(ctx, ca, resources=resources)
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith("kubelet and kube-proxy 1.32.3:")
    assert "kube-proxy" in state.unit_status.message
    assert service(machine, "kubelet") is None


def test_containerd_resource_overrides_the_packages(
    ctx: testing.Context, machine: Host, tmp_path: Path
) -> None:
    files = {
        name: STUB
        for name in ("bin/containerd", "bin/containerd-shim-runc-v2", "bin/runc", "cni/loopback")
    }
    archive = _tarball(tmp_path / "containerd.tar.gz", files)
    resources = {testing.Resource(name="containerd", path=archive)}
    state = ctx.run(ctx.on.install(), testing.State(resources=resources))
    assert state.unit_status == testing.BlockedStatus("needs a control plane: relate kube-control")
    base = machine.path("/opt/kaji/containerd/resource")
    record = service(machine, "containerd")
    assert record is not None
    assert record["spec"].argv[0] == str(base / "bin/containerd")
    assert record["spec"].env["PATH"].startswith(str(base / "bin") + ":")
    config = machine.read_text("/etc/containerd/config.toml") or ""
    assert f'BinaryName = "{base / "bin/runc"}"' in config
    assert f'bin_dir = "{base / "cni"}"' in config


def test_an_empty_resource_counts_as_not_attached(
    ctx: testing.Context, machine: Host, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.tar.gz"
    empty.write_bytes(b"")
    resources = {testing.Resource(name="containerd", path=empty)}
    state = ctx.run(ctx.on.install(), testing.State(resources=resources))
    assert state.unit_status == testing.BlockedStatus("needs a control plane: relate kube-control")
    assert not machine.exists("/opt/kaji/containerd")

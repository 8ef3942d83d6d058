"""containerd started with the worker charm's rendered config runs a container with runc.

Its root, state and socket live under a temporary directory; the image is built here from
Debian's busybox-static (an OCI archive holding /bin/busybox), imported with ``ctr`` and run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from charm_source import load_charm_module

from kaji import kubernetes
from kaji.host import Host, ProcessManager, ServiceChange

IMAGE = "kaji.test/busybox:1"


def worker_module(name: str) -> ModuleType:
    """Import ``kaji_worker.<name>`` from the worker charm's source."""
    return load_charm_module("worker", f"kaji_worker.{name}")


def busybox_image(path: Path, busybox: str) -> None:
    """Write an OCI image archive whose only layer holds /bin/busybox (and sh, echo links)."""

    def member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        directory = tarfile.TarInfo("bin")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        member(tar, "bin/busybox", Path(busybox).read_bytes(), 0o755)
        for applet in ("sh", "echo", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}"

    layer_digest = blob(layer.getvalue())
    config = json.dumps(
        {
            "architecture": kubernetes.machine_arch(),
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    config_digest = blob(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer.getvalue()),
                }
            ],
        }
    ).encode()
    manifest_digest = blob(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"io.containerd.image.name": IMAGE},
            }
        ],
    }
    with tarfile.open(path, "w") as out:
        member(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        member(out, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            member(out, f"blobs/sha256/{digest}", data)


def _processes_under(root: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if root.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _unmount_under(root: str) -> None:
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    points = [line.split()[4] for line in mounts if line.split()[4].startswith(root + "/")]
    for point in sorted(points, key=len, reverse=True):
        os.system(f"umount -l {point!s} 2>/dev/null")


@pytest.fixture
def machine(as_root: None, require_binaries: Callable[..., None]) -> Iterator[Host]:
    """A sandboxed machine with a short root (the containerd socket path must stay < 108)."""
    require_binaries("containerd", "ctr", "runc", "busybox")
    run_containerd = Path("/run/containerd")
    had_run_dir = run_containerd.exists()
    root = tempfile.mkdtemp(prefix="kw-", dir="/tmp")
    host = Host(root, ProcessManager(Path(root) / "var/lib/kaji/processes"))
    try:
        yield host
    finally:
        for name in host.services.list():
            host.services.remove(name)
        for pid in _processes_under(root):  # shims left behind by a failed test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        if not had_run_dir:  # containerd 1.6 keeps shim sockets under /run/containerd/s
            shutil.rmtree(run_containerd, ignore_errors=True)


def _ctr(host: Host, *args: str, timeout: float = 60) -> str:
    sock = str(host.path("/run/containerd/containerd.sock"))
    result = host.run(["ctr", "--address", sock, *args], timeout=timeout)
    return result.stdout


def _wait_for_socket(host: Host, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(
            ["ctr", "--address", str(host.path("/run/containerd/containerd.sock")), "version"],
            check=False,
        ).ok:
            return
        time.sleep(0.2)
    raise AssertionError("containerd did not answer on its socket")


def test_containerd_with_rendered_config_runs_a_busybox_container(machine: Host) -> None:
    containerd = worker_module("containerd")
    binaries = containerd.ContainerdBinaries(
        containerd=shutil.which("containerd"),
        runc=shutil.which("runc"),
        cni_bin_dir="/usr/lib/cni",
    )

    def render(registry: str) -> str:
        return containerd.render_config(
            machine,
            binaries=binaries,
            sandbox_image=kubernetes.pause_image(registry),
            cgroup_driver=containerd.cgroup_driver(machine),
            cni_conf_dir="/etc/cni/net.d",
        )

    machine.write_file(containerd.CONFIG, render("registry.k8s.io"))
    spec = containerd.service_spec(machine, binaries)
    assert machine.services.ensure(spec) is ServiceChange.STARTED
    _wait_for_socket(machine)
    version = _ctr(machine, "version")
    assert "Server:" in version

    archive = machine.path("/tmp/busybox.oci.tar")
    archive.parent.mkdir(parents=True, exist_ok=True)
    busybox_image(archive, shutil.which("busybox") or "/bin/busybox")
    _ctr(machine, "images", "import", str(archive))
    assert IMAGE in _ctr(machine, "images", "ls", "-q")

    fifo_dir = machine.path("/run/ctr-fifo")
    fifo_dir.mkdir(parents=True)
    word = f"kaji-{secrets.token_hex(4)}"
    output = _ctr(
        machine,
        "run",
        "--rm",
        "--fifo-dir",
        str(fifo_dir),
        IMAGE,
        f"kaji-test-{secrets.token_hex(3)}",
        "/bin/busybox",
        "echo",
        word,
        timeout=120,
    )
    assert output.strip() == word
    # Everything containerd keeps is under the sandbox root.
    assert (machine.path("/var/lib/containerd") / "io.containerd.content.v1.content").is_dir()
    assert machine.path("/run/containerd/containerd.sock").is_socket()

    # Restarted only when its config changes.
    pid = machine.services.pid("containerd")
    assert machine.services.ensure(spec) is ServiceChange.UNCHANGED
    assert machine.services.pid("containerd") == pid
    machine.write_file(containerd.CONFIG, render("registry.internal:5000"))
    assert machine.services.ensure(spec) is ServiceChange.RESTARTED
    assert machine.services.pid("containerd") != pid
    _wait_for_socket(machine)
    assert IMAGE in _ctr(machine, "images", "ls", "-q")  # its content survived the restart

"""containerd started with the worker charm's rendered config runs a container with runc.

Its root, state and socket live under a temporary directory; the image is built here from
Debian's busybox-static (an OCI archive holding /bin/busybox), imported with ``ctr`` and run.
With the model's proxies in its environment, containerd's own image pulls (the CRI plugin's,
which is what kubelet uses) go through a proxy on loopback, and no_proxy registries do not.
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
import socket
import socketserver
import struct
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from charm_source import load_charm_module

from kaji import kubernetes
from kaji.host import Host, ProcessManager, ProxySettings, ServiceChange

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


class RecordingProxy:
    """Records each request line (``CONNECT host:443``) and answers 502: nothing is fetched."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(4096).decode("latin-1").strip()
                if line:
                    seen.append(line.rsplit(" ", 1)[0])  # without the HTTP version
                self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return header + payload


def _cri_pull(socket_path: str, image: str, service: str, timeout: float = 60) -> bool:
    """One CRI ``PullImage`` call, as kubelet makes it: gRPC over HTTP/2 on the socket.

    Just enough HTTP/2 (prior knowledge, literal headers, one stream) to send the request and
    wait for the call to end (True) or the connection to close (False); the answer (an error
    here: nothing can be pulled) is not decoded.
    """

    def literal(name: str, value: str) -> bytes:  # HPACK: literal, not indexed, new name
        return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()

    def field(number: int, data: bytes) -> bytes:  # protobuf: length-delimited field < 128
        return bytes([number << 3 | 2, len(data)]) + data

    headers = b"".join(
        literal(k, v)
        for k, v in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", f"/{service}/PullImage"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    request = field(1, field(1, image.encode()))  # PullImageRequest{image: ImageSpec{image}}
    message = b"\x00" + struct.pack(">I", len(request)) + request
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _frame(4, 0, 0)  # SETTINGS
            + _frame(1, 0x4, 1, headers)  # HEADERS, END_HEADERS
            + _frame(0, 0x1, 1, message)  # DATA, END_STREAM
        )
        buffer = b""
        while True:
            while len(buffer) < 9:
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                buffer += chunk
            length = int.from_bytes(buffer[:3], "big")
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            while len(buffer) < 9 + length:
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                buffer += chunk
            payload, buffer = buffer[9 : 9 + length], buffer[9 + length :]
            if kind == 4 and not flags & 0x1:
                sock.sendall(_frame(4, 0x1, 0))  # SETTINGS ACK
            elif kind == 6 and not flags & 0x1:
                sock.sendall(_frame(6, 0x1, 0, payload))  # PING ACK
            elif stream == 1 and (kind == 3 or (kind == 1 and flags & 0x1)):
                return True  # RST_STREAM, or the trailers: the call is over
            elif kind == 7:
                return False  # GOAWAY


def test_containerd_pulls_images_through_the_model_proxies(machine: Host) -> None:
    containerd = worker_module("containerd")
    binaries = containerd.ContainerdBinaries(
        containerd=shutil.which("containerd"),
        runc=shutil.which("runc"),
        cni_bin_dir="/usr/lib/cni",
    )
    machine.write_file(
        containerd.CONFIG,
        containerd.render_config(
            machine,
            binaries=binaries,
            sandbox_image=kubernetes.pause_image("registry.k8s.io"),
            cgroup_driver=containerd.cgroup_driver(machine),
            cni_conf_dir="/etc/cni/net.d",
        ),
    )
    proxy = RecordingProxy()
    try:
        proxies = ProxySettings.parse(proxy.url, proxy.url, "127.0.0.1,direct.kaji.test")
        spec = containerd.service_spec(machine, binaries, proxy_environment=proxies.environment())
        assert machine.services.ensure(spec) is ServiceChange.STARTED
        _wait_for_socket(machine)
        sock = str(machine.path(containerd.SOCKET))
        for service in ("runtime.v1.ImageService", "runtime.v1alpha2.ImageService"):
            assert _cri_pull(sock, "registry.kaji.test/busybox:1", service)
            if proxy.seen:
                break
        assert proxy.seen, "containerd's pull did not go through the proxy"
        assert set(proxy.seen) == {"CONNECT registry.kaji.test:443"}
        assert _cri_pull(sock, "direct.kaji.test/busybox:1", service)  # in NO_PROXY
        assert set(proxy.seen) == {"CONNECT registry.kaji.test:443"}
    finally:
        proxy.close()

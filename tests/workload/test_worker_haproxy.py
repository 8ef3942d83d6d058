"""haproxy with the worker charm's rendered config balances over TCP backends on loopback,
keeps forwarding when one of them dies, and takes new endpoints on reload."""

from __future__ import annotations

import contextlib
import shutil
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from charm_source import load_charm_module

from kaji.host import Host, ProcessManager, ServiceChange

MACHINE_ADDRESS = "127.0.1.77"  # this sandboxed machine's loopback address


def worker_module(name: str) -> ModuleType:
    """Import ``kaji_worker.<name>`` from the worker charm's source."""
    return load_charm_module("worker", f"kaji_worker.{name}")


class _Backend(socketserver.ThreadingTCPServer):
    """A TCP server on 127.0.0.1 that greets every connection with its name."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str) -> None:
        self.name = name

        class Greet(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(f"{name}\n".encode())

        super().__init__(("127.0.0.1", 0), Greet)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _ask(port: int) -> str:
    with socket.create_connection((MACHINE_ADDRESS, port), timeout=10) as conn:
        conn.settimeout(10)
        return conn.recv(64).decode().strip()


def _eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def backends() -> Iterator[dict[str, _Backend]]:
    servers = {name: _Backend(name) for name in ("a", "b", "c")}
    yield servers
    for server in servers.values():
        if server.fileno() != -1:
            server.stop()


@pytest.fixture
def machine(
    tmp_path: Path, as_root: None, require_binaries: Callable[..., None]
) -> Iterator[Host]:
    require_binaries("haproxy")
    root = tmp_path / "machine"
    host = Host(
        root, ProcessManager(root / "var/lib/kaji/processes"), loopback_address=MACHINE_ADDRESS
    )
    yield host
    for name in host.services.list():
        host.services.remove(name)


def test_balancer_forwards_survives_a_dead_backend_and_reloads(
    machine: Host, backends: dict[str, _Backend]
) -> None:
    apilb = worker_module("apilb")
    port = _free_port(MACHINE_ADDRESS)
    a, b, c = backends["a"], backends["b"], backends["c"]
    machine.write_file(
        apilb.CONFIG,
        apilb.render_config(machine.loopback_address, [a.endpoint, b.endpoint], port=port),
    )
    spec = apilb.service_spec(machine, shutil.which("haproxy") or "/usr/sbin/haproxy")
    assert machine.services.ensure(spec) is ServiceChange.STARTED

    seen: set[str] = set()

    def both_seen() -> bool:
        with contextlib.suppress(OSError):
            seen.add(_ask(port))
        return seen >= {"a", "b"}

    _eventually(both_seen)
    assert seen == {"a", "b"}

    b.stop()
    answers = [_ask(port) for _ in range(10)]
    assert answers == ["a"] * 10  # every connection still served, by the live backend

    # An endpoint change: the config is rewritten and haproxy reloaded, not restarted.
    pid = machine.services.pid(spec.name)
    machine.write_file(
        apilb.CONFIG, apilb.render_config(machine.loopback_address, [c.endpoint], port=port)
    )
    assert machine.services.ensure(spec) is ServiceChange.UNCHANGED
    machine.services.reload(spec.name)
    _eventually(lambda: _ask(port) == "c")
    assert machine.services.pid(spec.name) == pid
    assert {_ask(port) for _ in range(5)} == {"c"}

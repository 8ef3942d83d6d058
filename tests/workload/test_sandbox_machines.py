"""Several sandboxed "machines" share this host, each running real daemons on its own address.

This is the mechanism every workload test and the offline model rely on: a Host rooted in a
directory of its own, a ProcessManager that really starts the program, and a loopback address
(127.0.1.N) per machine so the same ports do not clash.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kaji.host import Host, ProcessManager, ServiceChange, ServiceSpec


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture
def machines(tmp_path: Path, as_root: None) -> Iterator[list[Host]]:
    hosts = []
    for n in (1, 2):
        root = tmp_path / f"machine-{n}"
        root.mkdir()
        hosts.append(Host(root, ProcessManager(root / "var/lib/kaji/processes")))
    yield hosts
    for host in hosts:
        for name in host.services.list():
            host.services.remove(name)


def _etcd_spec(host: Host, address: str, port: int, peer_port: int) -> ServiceSpec:
    return ServiceSpec(
        "etcd",
        (
            shutil.which("etcd") or "/usr/bin/etcd",
            "--name=default",
            f"--data-dir={host.path('/var/lib/etcd/default')}",
            f"--listen-client-urls=http://{address}:{port}",
            f"--advertise-client-urls=http://{address}:{port}",
            f"--listen-peer-urls=http://{address}:{peer_port}",
            f"--initial-advertise-peer-urls=http://{address}:{peer_port}",
            f"--initial-cluster=default=http://{address}:{peer_port}",
        ),
        environment={"ETCD_UNSUPPORTED_ARCH": "arm64"},
    )


def test_two_machines_run_their_own_etcd(
    machines: list[Host], require_binaries: Callable[..., None]
) -> None:
    require_binaries("etcd", "etcdctl")
    endpoints = []
    for n, host in enumerate(machines, start=1):
        address = f"127.0.1.{n}"
        port, peer = _free_port(address), _free_port(address)
        spec = _etcd_spec(host, address, port, peer)
        assert host.services.ensure(spec) is ServiceChange.STARTED
        assert host.services.ensure(spec) is ServiceChange.UNCHANGED
        endpoints.append(f"http://{address}:{port}")
    for n, (host, endpoint) in enumerate(zip(machines, endpoints, strict=True)):

        def answers(host: Host = host, endpoint: str = endpoint) -> bool:
            return host.run(
                ["etcdctl", f"--endpoints={endpoint}", "endpoint", "health"], check=False
            ).ok

        _wait_for(answers)
        host.run(["etcdctl", f"--endpoints={endpoint}", "put", "machine", str(n)])
        # Data lives inside the machine's own root, nowhere else.
        assert host.path("/var/lib/etcd/default/member").is_dir()
    for n, (host, endpoint) in enumerate(zip(machines, endpoints, strict=True)):
        got = host.run(
            ["etcdctl", f"--endpoints={endpoint}", "get", "machine", "--print-value-only"]
        )
        assert got.stdout.strip() == str(n)
    assert machines[0].stats.services_started == 1


def test_stopping_a_machine_stops_its_daemon_only(
    machines: list[Host], require_binaries: Callable[..., None]
) -> None:
    require_binaries("etcd")
    first, second = machines
    specs = []
    for n, host in enumerate(machines, start=1):
        address = f"127.0.1.{n + 10}"
        spec = _etcd_spec(host, address, _free_port(address), _free_port(address))
        host.services.ensure(spec)
        specs.append(spec)
    assert first.services.stop("etcd")
    assert not first.services.is_running("etcd")
    assert second.services.is_running("etcd")

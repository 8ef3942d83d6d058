"""Fixtures for the etcd charm's unit tests: a sandbox host, a CA, a fake live etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import etcd_workload as workload
import pytest
from etcd_testlib import FakeEtcd
from ops import testing

from charm import EtcdCharm
from kaji import pki


@pytest.fixture(autouse=True)
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's charm works on a sandbox root; etcd is only recorded unless a test fakes it."""
    root = tmp_path / "machine"
    root.mkdir()
    monkeypatch.setenv("KAJI_HOST_ROOT", str(root))
    monkeypatch.setenv("KAJI_HOST_HOSTNAME", "machine-0")
    monkeypatch.delenv("KAJI_HOST_PROCESSES", raising=False)
    return root


@pytest.fixture
def ctx() -> testing.Context:
    return testing.Context(EtcdCharm, app_name="etcd")


@pytest.fixture(scope="session")
def ca() -> pki.CertificateAuthority:
    return pki.create_ca("test etcd CA")


@pytest.fixture
def fake_etcd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEtcd]:
    """A live etcd stand-in: Member's etcdctl-backed methods act on an in-memory cluster."""
    fake = FakeEtcd()
    fake.install(monkeypatch)
    return fake


@pytest.fixture
def fake_etcdctl(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """etcdctl's snapshot and defrag commands, recorded; `snapshot save` writes a file."""
    calls: list[tuple[str, ...]] = []

    def etcdctl(self: workload.Member, *args: str, endpoints: Any = None, **_: Any) -> str:
        calls.append((*args, *(endpoints or ())))
        if args[:2] == ("snapshot", "save"):
            Path(args[2]).write_bytes(b"snapshot-bytes")
        return "Finished defragmenting etcd member[https://192.0.2.0:2379]\n"

    def status(self: workload.Member, real_path: str) -> dict[str, int]:
        if not Path(real_path).is_file() or Path(real_path).read_bytes() != b"snapshot-bytes":
            raise workload.EtcdError("not a valid snapshot: bad hash")
        return {"hash": 1, "revision": 42, "totalKey": 7, "totalSize": 14}

    monkeypatch.setattr(workload.Member, "etcdctl", etcdctl)
    monkeypatch.setattr(workload.Member, "snapshot_status", status)
    return calls

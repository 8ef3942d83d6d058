"""Fixtures for the etcd charm's unit tests: a sandbox machine, a CA, a fake live etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import FakeEtcd
from kaji_etcd import EtcdError
from kaji_etcd.member import Member
from ops import testing

from charm import EtcdCharm
from kaji import pki

pytest_plugins = ["kaji.testing"]


@pytest.fixture(autouse=True)
def sandbox(sandbox_machine: Path) -> Path:
    """Every test's charm works on a sandbox machine; etcd is only recorded unless faked."""
    return sandbox_machine


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

    def etcdctl(self: Member, *args: str, endpoints: Any = None, **_: Any) -> str:
        calls.append((*args, *(endpoints or ())))
        if args[:2] == ("snapshot", "save"):
            Path(args[2]).write_bytes(b"snapshot-bytes")
        return "Finished defragmenting etcd member[https://192.0.2.0:2379]\n"

    def status(self: Member, real_path: str) -> dict[str, int]:
        if not Path(real_path).is_file() or Path(real_path).read_bytes() != b"snapshot-bytes":
            raise EtcdError("not a valid snapshot: bad hash")
        return {"hash": 1, "revision": 42, "totalKey": 7, "totalSize": 14}

    monkeypatch.setattr(Member, "etcdctl", etcdctl)
    monkeypatch.setattr(Member, "snapshot_status", status)
    return calls

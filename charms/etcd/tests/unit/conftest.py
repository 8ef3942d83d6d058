"""Fixtures for the etcd charm's unit tests: a sandbox host, a CA, a fake live etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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

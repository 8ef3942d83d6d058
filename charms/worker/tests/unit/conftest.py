"""Fixtures: the unit's sandboxed machine (kaji.testing), a Context, a cluster CA."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import HOSTNAME, same_host
from ops import testing

from charm import WorkerCharm
from kaji import pki
from kaji.host import Host

pytest_plugins = ["kaji.testing"]


@pytest.fixture
def machine(sandbox_machine: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    """The unit's sandboxed machine; every hook of a test sees this same Host (and stats)."""
    monkeypatch.setenv("KAJI_HOST_HOSTNAME", HOSTNAME)
    return same_host(monkeypatch)


@pytest.fixture
def ctx() -> testing.Context[WorkerCharm]:
    return testing.Context(WorkerCharm, app_name="worker", unit_id=0)


@pytest.fixture(scope="session")
def ca() -> pki.CertificateAuthority:
    return pki.create_ca("kaji-cluster")

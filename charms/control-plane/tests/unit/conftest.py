"""Fixtures for the control-plane unit tests: the sandboxed machine (kaji.testing) and fakes."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from builders import (
    _FAKE_KUBECTL,
    CONTEXT_ROOT,
    HOSTNAME,
    REFUSED,
    Cluster,
    EtcdSide,
    FakeKubectl,
)
from ops import testing

from charm import ControlPlaneCharm
from kaji import pki
from kaji.host import Host, RecordingManager

pytest_plugins = ["kaji.testing"]


@pytest.fixture
def root(sandbox_machine: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """The unit's sandbox root (KAJI_HOST_ROOT); services are recorded, never run."""
    monkeypatch.setenv("KAJI_HOST_HOSTNAME", HOSTNAME)
    return sandbox_machine


@pytest.fixture
def host(root: pathlib.Path) -> Host:
    return Host(root)


@pytest.fixture
def ctx(root: pathlib.Path) -> testing.Context[ControlPlaneCharm]:
    return testing.Context(ControlPlaneCharm, charm_root=CONTEXT_ROOT, app_name="control-plane")


@pytest.fixture(scope="session")
def etcd_side() -> EtcdSide:
    return EtcdSide(pki.create_ca("etcd-ca"))


@pytest.fixture
def cluster(ctx: testing.Context[ControlPlaneCharm], etcd_side: EtcdSide) -> Cluster:
    return Cluster(ctx, etcd_side)


@pytest.fixture
def kubectl(
    root: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> FakeKubectl:
    """Services that 'really run' and a kubectl that answers (``api(False)``: refuses)."""
    monkeypatch.setattr(RecordingManager, "runs_processes", True)
    # With the daemons not on PATH the charm runs kubectl from the install directory.
    path = root / "opt/kaji/kubernetes/current/kubectl"
    path.parent.mkdir(parents=True)
    fake = FakeKubectl(path, tmp_path / "kubectl.log", tmp_path / "kubectl.mode")
    fake.api(True)
    path.write_text(_FAKE_KUBECTL.format(log=fake.log, mode=fake.mode, refused=REFUSED))
    path.chmod(0o755)
    return fake


@pytest.fixture
def public_address(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    """Put a ``unit-get`` hook tool on PATH, as Juju does; returns a setter for its answer."""
    bin_dir = tmp_path / "juju-tools"
    bin_dir.mkdir()
    answer = tmp_path / "public-address.json"
    tool = bin_dir / "unit-get"
    tool.write_text(f'#!/bin/sh\n[ "$1" = public-address ] || exit 2\ncat "{answer}"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def set_answer(address: str) -> None:
        answer.write_text(json.dumps(address))

    return set_answer

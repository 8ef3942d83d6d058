"""Fixtures for the cni charm's unit tests; the builders are in builders.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import context
from ops import testing

pytest_plugins = ["kaji.testing"]


@pytest.fixture
def sandbox(sandbox_machine: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The unit's sandboxed machine (kaji.testing); running any command in it fails the test."""

    def no_commands(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a sandboxed cni unit ran a command: {args}")

    monkeypatch.setattr("kaji.host.commands.run", no_commands)
    return sandbox_machine


@pytest.fixture
def ctx(sandbox: Path) -> testing.Context:
    return context()

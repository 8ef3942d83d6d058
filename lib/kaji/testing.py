"""A pytest plugin for charm tests: the unit's sandboxed machine.

Load it with ``pytest_plugins = ["kaji.testing"]`` in a charm's ``tests/unit/conftest.py``.
Every hook a test runs then works on a private root (``KAJI_HOST_ROOT``) with services recorded,
never started, a fixed hostname, and no proxy settings unless the test sets them. Not used by
the charms themselves: nothing here is imported at run time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["sandbox_machine", "sandbox_machine_at"]

#: The hook environment a sandboxed unit must not inherit from the machine running the tests.
_HOST_VARIABLES = (
    "KAJI_HOST_PROCESSES",
    "KAJI_HOST_LOOPBACK",
    "JUJU_CHARM_HTTP_PROXY",
    "JUJU_CHARM_HTTPS_PROXY",
    "JUJU_CHARM_NO_PROXY",
)


def sandbox_machine_at(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, hostname: str = "machine-0"
) -> Path:
    """Make ``root`` the unit's machine for every hook run while ``monkeypatch`` holds."""
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("KAJI_HOST_ROOT", str(root))
    monkeypatch.setenv("KAJI_HOST_HOSTNAME", hostname)
    for name in _HOST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture
def sandbox_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The root of this test's sandboxed machine (hostname ``machine-0``)."""
    return sandbox_machine_at(tmp_path / "machine", monkeypatch)

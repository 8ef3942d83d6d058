"""Workload tests drive real Debian daemons; they need root and the packages ./run installs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest


@pytest.fixture
def require_binaries() -> Callable[..., None]:
    """Return a check that skips (with the reason) unless every named program is installed."""

    def check(*names: str) -> None:
        missing = [n for n in names if shutil.which(n) is None]
        if missing:
            pytest.skip(f"not installed: {', '.join(missing)} (./run test installs them as root)")

    return check


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, daemons on 127.0.1.N)")

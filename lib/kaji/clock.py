"""The time kaji charms and the kaji library read: the machine's clock, or the offline model's.

Under Juju this is the wall clock. The offline model (``kaji.model``) keeps a clock of its own
that ``python -m kaji.model wait`` advances, and runs every hook with ``KAJI_CLOCK_OFFSET`` set
to how far that clock is ahead of the wall clock, so "a year later" can be simulated: certificate
issue and renewal (``kaji.pki``), reconcile-record ages (``kaji.reconciler``) and anything else
that asks the time here follow the model. Durations and timeouts keep using
``time.monotonic()``, which the model never moves.
"""

from __future__ import annotations

import os
import time as _time
from datetime import datetime, timezone

#: Seconds the clock is ahead of the wall clock (set by the offline model for each hook).
OFFSET_ENV = "KAJI_CLOCK_OFFSET"


def offset() -> float:
    """How far this clock runs ahead of the wall clock, in seconds (0 outside the model)."""
    value = os.environ.get(OFFSET_ENV, "")
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def time() -> float:
    """Seconds since the epoch, like :func:`time.time`."""
    return _time.time() + offset()


def now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.fromtimestamp(time(), timezone.utc)

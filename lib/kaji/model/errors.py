"""The offline model's errors and what one ``settle`` reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


class ModelError(Exception):
    """A request the model cannot carry out (unknown unit, bad config value, ...)."""


class NotConvergingError(ModelError):
    """The charms kept producing work: the hook budget ran out with events still pending."""

    def __init__(self, message: str, busiest: Sequence[tuple[str, int]]) -> None:
        super().__init__(message)
        self.busiest = list(busiest)


#: Short name used by the command line and the tests.
NotConverging = NotConvergingError


@dataclasses.dataclass
class RunStats:
    """What one ``settle`` did: hooks run, and per unit the counters that moved."""

    hooks: int
    seconds: float
    per_unit: dict[str, dict[str, int]]

    def total(self, counter: str) -> int:
        """Sum of one counter over every unit."""
        return sum(c.get(counter, 0) for c in self.per_unit.values())

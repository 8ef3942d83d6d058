"""relation-departed names the unit that leaves (JUJU_DEPARTING_UNIT), unit 0 included.

Juju sets JUJU_DEPARTING_UNIT to the unit being removed in every relation-departed it causes:
on the units that see it go (where it is also JUJU_REMOTE_UNIT) and on the leaving unit itself,
for each remote unit it departs from (there it names the local unit, of the local application).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_events import deploy, log_dir, recorded  # noqa: F401  (log_dir is a fixture)


@pytest.mark.parametrize("leaving", ["alpha/0", "alpha/1"])
def test_every_relation_departed_names_the_leaving_unit(
    model_dir: Path,
    log_dir: Path,  # noqa: F811
    leaving: str,
) -> None:
    model = deploy(model_dir)
    start = len(recorded(log_dir))
    model.remove_unit(leaving)
    departed = [e for e in recorded(log_dir)[start:] if e["hook"].endswith("-relation-departed")]
    own = [e for e in departed if e["unit"] == leaving]
    others = [e for e in departed if e["unit"] != leaving]
    # The leaving unit departs its peer and both beta units; alpha's peer and beta see it go.
    assert sorted(e["remote_unit"] for e in own) == sorted(
        ["alpha/1" if leaving == "alpha/0" else "alpha/0", "beta/0", "beta/1"]
    )
    assert {e["unit"] for e in others} == {
        "alpha/1" if leaving == "alpha/0" else "alpha/0",
        "beta/0",
        "beta/1",
    }
    # Its own view: the departing unit is itself (ops: event.departing_unit == self.unit).
    assert [e.get("departing") for e in own] == [leaving] * len(own), own
    assert [e.get("departing") for e in others] == [leaving] * len(others), others

"""The skeleton's contract: its relation endpoints and a truthful status on every event."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from ops import testing

from charm import CniCharm

SKELETON_STATUS = testing.BlockedStatus("skeleton: pod network not implemented yet")


@pytest.fixture
def ctx() -> testing.Context:
    return testing.Context(CniCharm)


def test_endpoints_are_the_relation_contract() -> None:
    charm_root = pathlib.Path(__file__).parents[2]
    meta = yaml.safe_load((charm_root / "charmcraft.yaml").read_text())
    assert meta.get("subordinate") is True
    assert meta.get("provides") == {"cni": {"interface": "kaji-cni", "scope": "container"}}
    assert meta.get("peers") == {"network": {"interface": "kaji-cni-network"}}


@pytest.mark.parametrize("event", ["install", "start", "config_changed", "update_status"])
def test_lifecycle_events_say_no_workload_runs(ctx: testing.Context, event: str) -> None:
    state = ctx.run(getattr(ctx.on, event)(), testing.State(leader=True))
    assert state.unit_status == SKELETON_STATUS


def test_relation_changed_is_reconciled(ctx: testing.Context) -> None:
    relation = testing.SubordinateRelation("cni", remote_app_name="worker")
    state = ctx.run(ctx.on.relation_changed(relation), testing.State(relations={relation}))
    assert state.unit_status == SKELETON_STATUS

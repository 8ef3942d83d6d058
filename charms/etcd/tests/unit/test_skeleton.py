"""The skeleton's contract: its relation endpoints and a truthful status on every event."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from ops import testing

from charm import EtcdCharm

SKELETON_STATUS = testing.BlockedStatus("skeleton: etcd not implemented yet")


@pytest.fixture
def ctx() -> testing.Context:
    return testing.Context(EtcdCharm)


def test_endpoints_are_the_relation_contract() -> None:
    charm_root = pathlib.Path(__file__).parents[2]
    meta = yaml.safe_load((charm_root / "charmcraft.yaml").read_text())
    assert meta.get("provides") == {"db": {"interface": "kaji-etcd"}}
    assert meta.get("peers") == {"cluster": {"interface": "kaji-etcd-peers"}}


@pytest.mark.parametrize("event", ["install", "start", "config_changed", "update_status"])
def test_lifecycle_events_say_no_workload_runs(ctx: testing.Context, event: str) -> None:
    state = ctx.run(getattr(ctx.on, event)(), testing.State(leader=True))
    assert state.unit_status == SKELETON_STATUS


def test_relation_changed_is_reconciled(ctx: testing.Context) -> None:
    relation = testing.Relation("db", remote_app_name="control-plane")
    state = ctx.run(ctx.on.relation_changed(relation), testing.State(relations={relation}))
    assert state.unit_status == SKELETON_STATUS

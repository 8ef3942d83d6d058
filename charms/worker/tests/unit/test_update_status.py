"""update-status: cheap while nothing changed (kaji.reconciler's reconcile record), in full when
config, the model's proxies, relation data or a service changed, or the last one blocked."""

from __future__ import annotations

import dataclasses
import stat
from typing import Any

import pytest
from builders import joined, kube_control
from kaji_worker.node import Node
from ops import testing

from kaji import pki
from kaji.host import Host

RECORD = "/var/lib/kaji/worker/reconciled.json"


@pytest.fixture
def reconciles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full reconcile of the node (the unit's name, once per Node.reconcile)."""
    calls: list[str] = []
    real = Node.reconcile

    def counting(self: Node, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["unit_name"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Node, "reconcile", counting)
    return calls


def test_nothing_changed_skips_the_reconcile_and_writes_nothing(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority, reconciles: list[str]
) -> None:
    state, _ = joined(ctx, ca, units=3)
    reconciles.clear()
    stats = machine.stats.as_dict()
    after = ctx.run(ctx.on.update_status(), state)
    assert reconciles == []
    assert machine.stats.as_dict() == stats
    assert after.unit_status == state.unit_status
    record = machine.path(RECORD)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


def test_changed_config_reconciles(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority, reconciles: list[str]
) -> None:
    state, _ = joined(ctx, ca)
    reconciles.clear()
    changed = dataclasses.replace(state, config={"node-labels": "team=ml"})
    ctx.run(ctx.on.update_status(), changed)
    assert reconciles == ["worker/0"]


def test_changed_relation_data_reconciles(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority, reconciles: list[str]
) -> None:
    state, _ = joined(ctx, ca)
    reconciles.clear()
    relation = state.get_relation(7)
    moved = dataclasses.replace(relation, remote_units_data={0: {"api-endpoint": '"x"'}})
    others = [r for r in state.relations if r.id != relation.id]
    after = ctx.run(ctx.on.update_status(), dataclasses.replace(state, relations=[moved, *others]))
    assert reconciles == ["worker/0"]
    assert after.unit_status.name == "waiting"


def test_a_blocked_node_is_not_recorded_and_reconciles_each_time(
    ctx: testing.Context, machine: Host, reconciles: list[str]
) -> None:
    state = ctx.run(ctx.on.install(), testing.State())
    assert state.unit_status == testing.BlockedStatus("needs a control plane: relate kube-control")
    assert not machine.exists(RECORD)
    ctx.run(ctx.on.update_status(), state)
    assert reconciles == ["worker/0", "worker/0"]


def test_a_waiting_node_is_recorded(
    ctx: testing.Context, machine: Host, reconciles: list[str]
) -> None:
    state = ctx.run(ctx.on.install(), testing.State(relations=[kube_control()]))
    assert state.unit_status.name == "waiting"
    assert machine.exists(RECORD)
    after = ctx.run(ctx.on.update_status(), state)
    assert reconciles == ["worker/0"]
    assert after.unit_status == state.unit_status


def test_leaving_removes_the_record(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca)
    assert machine.exists(RECORD)
    ctx.run(ctx.on.stop(), state)
    assert not machine.exists(RECORD)

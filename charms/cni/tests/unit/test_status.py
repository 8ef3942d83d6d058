"""collect-status only reports what this dispatch's reconcile reached; it never acts itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import app_bag, files_under, peer_bag, peers, principal, state
from kaji_cni.config import CniConfig
from ops import testing

EXISTING = {"cni/0": "10.1.0.0/24", "cni/1": "10.1.1.0/24"}


def _settled(ctx: testing.Context) -> testing.State:
    network = peers({1: peer_bag("node-1", "192.168.1.11")}, app=app_bag(allocations=EXISTING))
    out = ctx.run(ctx.on.config_changed(), state(principal(), network, leader=True))
    assert out.unit_status.name == "active"
    return out


def _relation_data(out: testing.State) -> dict[int, tuple[dict, dict]]:
    return {r.id: (dict(r.local_app_data), dict(r.local_unit_data)) for r in out.relations}


NOT_RECONCILED: dict[str, Callable[[testing.Context, testing.State], object]] = {
    "stop": lambda ctx, s: ctx.on.stop(),
    "network-relation-created": lambda ctx, s: ctx.on.relation_created(s.get_relation(2)),
    "cni-relation-created": lambda ctx, s: ctx.on.relation_created(s.get_relation(1)),
}


@pytest.mark.parametrize("event", sorted(NOT_RECONCILED))
def test_an_event_that_does_not_reconcile_changes_nothing_not_even_the_status(
    ctx: testing.Context, sandbox: Path, event: str
) -> None:
    settled = _settled(ctx)
    # A status Juju already shows (say, from an earlier hook) must survive collect-status.
    before = dataclasses.replace(
        settled, unit_status=testing.MaintenanceStatus("set by an earlier hook")
    )
    # The machine changed behind the unit's back: only a reconcile may notice and repair it.
    (sandbox / "etc/cni/net.d/10-kaji.conflist").write_text("tampered\n")
    files = files_under(sandbox)
    out = ctx.run(NOT_RECONCILED[event](ctx, before), before)
    assert out.unit_status == testing.MaintenanceStatus("set by an earlier hook")
    assert files_under(sandbox) == files
    assert _relation_data(out) == _relation_data(before)


def test_a_reconciling_event_reports_the_status_it_reached(
    ctx: testing.Context, sandbox: Path
) -> None:
    settled = _settled(ctx)
    before = dataclasses.replace(settled, unit_status=testing.MaintenanceStatus("old"))
    out = ctx.run(ctx.on.update_status(), before)
    assert out.unit_status == settled.unit_status


RECONCILED: dict[str, Callable[[testing.Context, testing.State], object]] = {
    "network-relation-changed": lambda ctx, s: ctx.on.relation_changed(s.get_relation(2)),
    "network-relation-departed": lambda ctx, s: ctx.on.relation_departed(
        s.get_relation(2), remote_unit=1, departing_unit=1
    ),
    "network-relation-broken": lambda ctx, s: ctx.on.relation_broken(s.get_relation(2)),
    "cni-relation-changed": lambda ctx, s: ctx.on.relation_changed(s.get_relation(1)),
    "cni-relation-departed": lambda ctx, s: ctx.on.relation_departed(
        s.get_relation(1), remote_unit=0
    ),
    "cni-relation-broken": lambda ctx, s: ctx.on.relation_broken(s.get_relation(1)),
}


@pytest.mark.parametrize("event", sorted(RECONCILED))
def test_every_relation_event_reconciles_exactly_once(
    ctx: testing.Context, monkeypatch: pytest.MonkeyPatch, event: str
) -> None:
    settled = _settled(ctx)
    reads: list[object] = []
    real = CniConfig.from_options.__func__  # type: ignore[attr-defined]

    def counted(cls: type[CniConfig], options: object) -> CniConfig:
        reads.append(options)  # the first step of every reconcile
        return real(cls, options)

    monkeypatch.setattr(CniConfig, "from_options", classmethod(counted))
    ctx.run(RECONCILED[event](ctx, settled), settled)
    assert len(reads) == 1

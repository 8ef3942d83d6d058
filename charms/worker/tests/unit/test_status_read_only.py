"""collect-status is read-only: ops runs it after every event, including those (and actions)
the charm does not reconcile on, and then it must change nothing on the machine or relations.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from builders import joined, service
from ops import testing

from kaji import pki
from kaji.host import Host

CHARM_ROOT = pathlib.Path(__file__).parents[2]
#: Events the worker has no handler for (ops still runs collect-status after them).
NOT_RECONCILED: dict[str, Callable[[testing.Context, testing.State], Any]] = {
    "kube-control-relation-created": lambda ctx, state: ctx.on.relation_created(
        state.get_relations("kube-control")[0]
    ),
    "cni-relation-created": lambda ctx, state: ctx.on.relation_created(
        state.get_relations("cni")[0]
    ),
}


def snapshot(host: Host) -> dict[str, tuple[int, bytes]]:
    """Every file on the machine: mode and content."""
    return {
        host.machine_path(p): (p.stat().st_mode, p.read_bytes())
        for p in sorted(host.root.rglob("*"))
        if p.is_file()
    }


def test_the_worker_has_no_actions() -> None:
    """Every action would need a read-only test here; there are none to run."""
    meta = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    assert "actions" not in meta
    assert not (CHARM_ROOT / "actions.yaml").exists()


@pytest.mark.parametrize("event", sorted(NOT_RECONCILED))
def test_collect_status_after_an_unhandled_event_changes_nothing(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority, event: str
) -> None:
    settled, _ = joined(ctx, ca, units=3)
    # Drift a reconcile would repair, and a status only Juju knows: both must stay as they are.
    machine.remove_file("/etc/kubernetes/kubelet-config.yaml")
    settled = dataclasses.replace(settled, unit_status=testing.WaitingStatus("as Juju has it"))
    files = snapshot(machine)
    stats = machine.stats.as_dict()
    services = {n: service(machine, n) for n in ("containerd", "kubelet", "kube-proxy")}
    services["kaji-apiserver-lb"] = service(machine, "kaji-apiserver-lb")

    after = ctx.run(NOT_RECONCILED[event](ctx, settled), settled)

    assert snapshot(machine) == files, "no file written or removed"
    assert machine.stats.as_dict() == stats
    assert {n: service(machine, n) for n in services} == services, "nothing (re)started"
    for relation in settled.relations:
        out = after.get_relation(relation.id)
        assert out.local_unit_data == relation.local_unit_data
        assert out.local_app_data == relation.local_app_data
    assert after.unit_status == settled.unit_status

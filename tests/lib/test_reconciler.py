"""The shared charm shape: every relevant event reconciles; CA material in app-owned secrets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import ops
import pytest
from ops import testing

from kaji.app_secrets import app_secret_content
from kaji.host import host_from_environment
from kaji.reconciler import ReconcileRecord, ReconcilingCharm

META = {
    "name": "probe",
    "requires": {"db": {"interface": "x"}},
    "peers": {"cluster": {"interface": "y"}},
}


class ProbeCharm(ReconcilingCharm):
    made: ClassVar[list[str]] = []

    def reconcile(self) -> None:
        content = app_secret_content(self, "probe-ca", self._make)
        self.unit.set_workload_version("with-ca" if content else "no-ca")

    def _make(self) -> dict[str, str]:
        self.made.append(self.unit.name)
        return {"key": f"made-by-{self.unit.name}"}

    def assess_status(self) -> ops.StatusBase:
        return ops.ActiveStatus("reconciled")


def ctx() -> testing.Context:
    return testing.Context(ProbeCharm, meta=META)


def test_relation_and_lifecycle_events_all_reconcile() -> None:
    relation = testing.Relation("db")
    peers = testing.PeerRelation("cluster", peers_data={1: {}})
    c = ctx()
    for event in (
        c.on.install(),
        c.on.config_changed(),
        c.on.update_status(),
        c.on.relation_changed(relation, remote_unit=0),
        c.on.relation_departed(relation, remote_unit=1),
        c.on.relation_changed(peers, remote_unit=1),
    ):
        state = c.run(event, testing.State(leader=True, relations={relation, peers}))
        assert state.unit_status == testing.ActiveStatus("reconciled")
        assert state.workload_version == "with-ca"


def test_leader_creates_the_secret_once_and_a_new_leader_reuses_it() -> None:
    ProbeCharm.made.clear()
    c = ctx()
    state = c.run(c.on.leader_elected(), testing.State(leader=True))
    assert ProbeCharm.made == ["probe/0"]
    (secret,) = state.secrets
    assert secret.owner == "app"
    assert secret.tracked_content == {"key": "made-by-probe/0"}
    # The next leader (or the same one again) finds it and makes nothing.
    c.run(c.on.leader_elected(), testing.State(leader=True, secrets={secret}))
    assert ProbeCharm.made == ["probe/0"]


def test_non_leader_without_the_secret_makes_nothing() -> None:
    ProbeCharm.made.clear()
    c = ctx()
    state = c.run(c.on.config_changed(), testing.State(leader=False))
    assert ProbeCharm.made == []
    assert not state.secrets
    assert state.workload_version == "no-ca"


# -- the opt-in cheap update-status ---------------------------------------------------------

RECORD = "/var/lib/kaji/probe/reconciled.json"


class RememberingCharm(ReconcilingCharm):
    """Reconciles into a counter, reports a status naming the config, remembers reconciles."""

    reconciles: ClassVar[list[str]] = []
    healthy: ClassVar[bool] = True
    extra: ClassVar[dict[str, str]] = {}

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._status: ops.StatusBase | None = None
        self.remember_reconciles(host_from_environment(), RECORD, max_age=3600)

    def reconcile(self) -> None:
        self.reconciles.append(self.unit.name)
        self._status = ops.ActiveStatus(f"colour {self.config.get('colour', '-')}")
        self.record_reconciled(self._status)

    def reconcile_inputs(self) -> dict[str, Any]:
        return dict(self.extra)

    def still_healthy(self, record: ReconcileRecord) -> bool:
        return self.healthy

    def assess_status(self) -> ops.StatusBase:
        return self._status or ops.MaintenanceStatus("never reconciled")


REMEMBERING_META = {
    "name": "probe",
    "requires": {"db": {"interface": "x"}},
    "peers": {"cluster": {"interface": "y"}},
}


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KAJI_HOST_ROOT", str(tmp_path))
    RememberingCharm.reconciles.clear()
    monkeypatch.setattr(RememberingCharm, "healthy", True)
    monkeypatch.setattr(RememberingCharm, "extra", {})
    return tmp_path


def remembering() -> testing.Context:
    return testing.Context(
        RememberingCharm, meta=REMEMBERING_META, config={"options": {"colour": {"type": "string"}}}
    )


def settled_state(**kwargs: Any) -> testing.State:
    relations = {
        testing.Relation("db", id=1, remote_app_data={"a": "1"}, local_app_data={"mine": "x"}),
        testing.PeerRelation("cluster", id=2, local_app_data={"p": "1"}),
    }
    return testing.State(**{"leader": True, "relations": relations, **kwargs})


def test_unchanged_update_status_reports_the_recorded_status_without_reconciling(
    machine: Path,
) -> None:
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state(config={"colour": "red"}))
    assert RememberingCharm.reconciles == ["probe/0"]
    record_file = machine / RECORD.lstrip("/")
    assert oct(record_file.stat().st_mode & 0o777) == "0o600"
    before = record_file.read_bytes()
    out = c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0"]
    assert out.unit_status == testing.ActiveStatus("colour red")
    assert record_file.read_bytes() == before


@pytest.mark.parametrize(
    "change",
    [
        lambda s: dataclasses.replace(s, config={"colour": "blue"}),
        lambda s: _with(s, testing.Relation("db", id=1, remote_app_data={"a": "2"})),
        lambda s: _with(s, testing.Relation("db", id=1, remote_units_data={0: {"u": "1"}})),
        lambda s: _with(s, testing.PeerRelation("cluster", id=2, local_app_data={"p": "2"})),
        lambda s: _with(s, testing.Relation("db", id=3)),
    ],
    ids=["config", "remote-app", "remote-unit", "peer-app", "new-relation"],
)
def test_a_changed_input_reconciles(
    machine: Path, change: Callable[[testing.State], testing.State]
) -> None:
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state(config={"colour": "red"}))
    c.run(c.on.update_status(), change(state))
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]


def test_the_former_leaders_update_status_stays_cheap_and_writes_nothing(machine: Path) -> None:
    """Juju runs no hook on a deposed leader; its first update-status must still be idle."""
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state(config={"colour": "red"}))
    record_file = machine / RECORD.lstrip("/")
    before = record_file.read_bytes()
    out = c.run(c.on.update_status(), dataclasses.replace(state, leader=False))
    assert RememberingCharm.reconciles == ["probe/0"]
    assert out.unit_status == testing.ActiveStatus("colour red")
    assert record_file.read_bytes() == before


def test_changed_proxy_settings_reconcile(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Juju's model proxy settings come as hook environment, with no event of their own."""
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state())
    monkeypatch.setenv("JUJU_CHARM_HTTPS_PROXY", "http://proxy.example:3128")
    c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]


def test_extra_inputs_are_part_of_the_digest(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state())
    monkeypatch.setattr(RememberingCharm, "extra", {"address": "10.0.0.2"})
    c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]


def test_non_leader_digest_skips_its_own_app_bag_on_a_non_peer_relation(machine: Path) -> None:
    """Juju refuses that read; the peer relation's app bag is readable and counts."""
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state(leader=False))
    own_app_changed = _with(
        state,
        testing.Relation(
            "db", id=1, remote_app_data={"a": "1"}, local_app_data={"mine": "changed"}
        ),
    )
    out = c.run(c.on.update_status(), own_app_changed)
    assert RememberingCharm.reconciles == ["probe/0"]  # not readable, so not an input
    assert out.unit_status == testing.ActiveStatus("colour -")


def test_unhealthy_machine_reconciles(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state())
    monkeypatch.setattr(RememberingCharm, "healthy", False)
    c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]


def test_maximum_age_forces_a_full_reconcile_then_the_clock_restarts(machine: Path) -> None:
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state())
    record_file = machine / RECORD.lstrip("/")
    record = json.loads(record_file.read_text())
    record["at"] -= 3601
    record_file.write_text(json.dumps(record))
    c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]
    assert json.loads(record_file.read_text())["at"] > record["at"] + 3600
    c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]


def test_recheck_after_forces_a_full_reconcile(machine: Path) -> None:
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state())
    record_file = machine / RECORD.lstrip("/")
    record = json.loads(record_file.read_text())
    record["recheck-after"] = record["at"] - 1
    record_file.write_text(json.dumps(record))
    c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]


@pytest.mark.parametrize("content", ["", "not json", '{"digest": 1}', '["a"]'])
def test_a_missing_or_malformed_record_reconciles(machine: Path, content: str) -> None:
    c = remembering()
    state = c.run(c.on.config_changed(), settled_state())
    (machine / RECORD.lstrip("/")).write_text(content)
    c.run(c.on.update_status(), state)
    assert RememberingCharm.reconciles == ["probe/0", "probe/0"]


def test_charms_that_do_not_opt_in_reconcile_on_update_status() -> None:
    ProbeCharm.made.clear()
    c = ctx()
    state = c.run(c.on.update_status(), testing.State(leader=True))
    state = c.run(c.on.update_status(), state)
    assert state.unit_status == testing.ActiveStatus("reconciled")
    assert ProbeCharm.made == ["probe/0"]  # the secret made by the first, reused by the second


def test_record_round_trips_and_rejects_garbage() -> None:
    record = ReconcileRecord("d" * 64, 5, ("blocked", "why"), 9, {"k": [1]})
    assert ReconcileRecord.from_json(record.to_json()) == record
    assert record.unit_status() == ops.BlockedStatus("why")
    bad = json.dumps({"digest": "d", "at": 5, "status": ["active", 3]})
    assert ReconcileRecord.from_json(bad) is None
    unknown = json.dumps({"digest": "d", "at": 5, "status": ["error", "hook failed"]})
    assert ReconcileRecord.from_json(unknown) is None


def _with(state: testing.State, relation: Any) -> testing.State:
    others = [r for r in state.relations if r.endpoint != relation.endpoint]
    return dataclasses.replace(state, relations=frozenset({*others, relation}))

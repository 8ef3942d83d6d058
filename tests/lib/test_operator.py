"""The shared charm shape: every relevant event reconciles; CA material in app-owned secrets."""

from __future__ import annotations

from typing import ClassVar

import ops
from ops import testing

from kaji.operator import ReconcilingCharm, app_secret_content

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

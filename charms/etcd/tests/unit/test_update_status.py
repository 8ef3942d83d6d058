"""update-status with nothing new is cheap: no crypto import, no file written, no restart."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import ADDRESS, FakeEtcd, app_bag, ca_secret, peer_relation, peer_units
from kaji_etcd import literals
from kaji_etcd.literals import CA_SECRET_LABEL
from ops import testing

from kaji import pki

CHARM = Path(__file__).parents[2]

_CHILD = """
import json, sys
from ops import testing
from charm import EtcdCharm
data = json.loads(sys.stdin.read())
relation = testing.PeerRelation(
    "cluster", id=data["id"], local_app_data=data["app"], local_unit_data=data["unit"]
)
secret = testing.Secret(data["ca"], label=data["label"], owner="app")
state = testing.State(leader=True, relations={relation}, secrets={secret})
ctx = testing.Context(EtcdCharm, app_name="etcd")
with ctx(ctx.on.update_status(), state) as manager:
    out = manager.run()
    stats = manager.charm.host.stats.as_dict()
print(json.dumps({
    "crypto": sorted(m for m in sys.modules if m.startswith("cryptography")),
    "stats": stats,
    "status": [out.unit_status.name, out.unit_status.message],
}))
"""


def test_noop_update_status_needs_no_cryptography(ctx: testing.Context, sandbox: Path) -> None:
    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    relation = state.get_relations("cluster")[0]
    secret = next(s for s in state.secrets if s.label == CA_SECRET_LABEL)
    payload = {
        "app": dict(relation.local_app_data),
        "unit": dict(relation.local_unit_data),
        "ca": dict(secret.tracked_content),
        "label": CA_SECRET_LABEL,
        "id": relation.id,  # Juju keeps a relation's id; the digest includes it
    }
    env = {**os.environ, "PYTHONPATH": f"{CHARM / 'src'}:{CHARM.parents[1] / 'lib'}"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["crypto"] == []
    assert result["stats"]["files_written"] == 0
    assert result["stats"]["services_restarted"] == result["stats"]["services_started"] == 0
    assert result["status"] == [
        "active",
        "1 member (etcd not running on this machine: recorded only)",
    ]


def test_update_status_reconciles_when_something_changed(
    ctx: testing.Context, sandbox: Path
) -> None:
    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    changed = testing.State(
        leader=True,
        relations=state.relations,
        secrets=state.secrets,
        config={"snapshot-count": 500},
    )
    ctx.run(ctx.on.update_status(), changed)
    config = json.loads((sandbox / "etc/kaji/etcd/etcd.conf.yml").read_text())
    assert config["snapshot-count"] == 500


def test_full_reconcile_is_forced_after_the_interval_then_cheap_again(
    ctx: testing.Context, sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import charm

    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    record_path = sandbox / "var/lib/kaji/etcd/reconciled.json"
    record = json.loads(record_path.read_text())
    record["at"] -= literals.FULL_RECONCILE_INTERVAL + 10
    record_path.write_text(json.dumps(record))
    calls: list[str] = []
    original = charm.EtcdCharm.reconcile

    def counting(self: charm.EtcdCharm) -> None:
        calls.append("reconcile")
        original(self)

    monkeypatch.setattr(charm.EtcdCharm, "reconcile", counting)
    state = ctx.run(ctx.on.update_status(), state)
    assert calls == ["reconcile"]
    ctx.run(ctx.on.update_status(), state)
    assert calls == ["reconcile"]  # the clock restarted: cheap again


def test_update_status_reconciles_when_relation_data_changed(
    ctx: testing.Context, sandbox: Path
) -> None:
    from builders import client_csr

    state = ctx.run(
        ctx.on.install(),
        testing.State(
            leader=True,
            relations={
                testing.PeerRelation("cluster"),
                testing.Relation("db", id=7, remote_app_name="kube"),
            },
        ),
    )
    db = state.get_relations("db")[0]
    assert json.loads(db.local_app_data["certificates"]) == {}
    asked = dataclasses.replace(
        db, remote_units_data={0: {"client-csr": json.dumps(client_csr("kube/0"))}}
    )
    others = [r for r in state.relations if r.endpoint != "db"]
    out = ctx.run(ctx.on.update_status(), dataclasses.replace(state, relations={*others, asked}))
    assert "kube/0" in json.loads(out.get_relation(7).local_app_data["certificates"])


def test_skipped_update_status_reports_the_recorded_status(
    ctx: testing.Context, sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import charm

    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    record_path = sandbox / "var/lib/kaji/etcd/reconciled.json"
    record = json.loads(record_path.read_text())
    assert record["status"] == [state.unit_status.name, state.unit_status.message]
    assert oct(record_path.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setattr(charm.EtcdCharm, "reconcile", lambda self: pytest.fail("reconciled"))
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == state.unit_status


def test_stopped_etcd_makes_update_status_reconcile(ctx: testing.Context, sandbox: Path) -> None:
    from kaji.host import RecordingManager

    state = ctx.run(
        ctx.on.install(), testing.State(leader=True, relations={testing.PeerRelation("cluster")})
    )
    services = RecordingManager(sandbox / "var/lib/kaji/services")
    services.stop("etcd")
    ctx.run(ctx.on.update_status(), state)
    assert RecordingManager(sandbox / "var/lib/kaji/services").is_running("etcd")


def test_record_and_marker_live_in_the_workload_data_root() -> None:
    """The reconcile record and the leaving markers live beside the member's data."""
    assert f"{literals.DATA_ROOT}/reconciled.json" == literals.RECONCILED_FILE
    assert f"{literals.DATA_ROOT}/departed" == literals.DEPARTED_MARKER
    assert f"{literals.DATA_ROOT}/leaving" == literals.LEAVING_MARKER


def test_live_settled_update_status_asks_etcd_but_reads_no_relation_data(
    ctx: testing.Context,
    ca: pki.CertificateAuthority,
    fake_etcd: FakeEtcd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record holds the endpoints and members: the digest says the data is unchanged."""
    import charm
    from kaji.interfaces import etcd_peers

    fake_etcd.add("etcd-0", ADDRESS)
    peers = peer_units(1, 2)
    for p in peers:
        fake_etcd.add(p.data.member_name, p.address)
    members = {"etcd-0": f"https://{ADDRESS}:2380"}
    members.update({p.data.member_name: p.data.peer_url for p in peers})
    bag = app_bag(ca, members, {p.name: p.certificate(ca) for p in peers})
    state = testing.State(
        leader=True, relations={peer_relation(peers, local_app_data=bag)}, secrets={ca_secret(ca)}
    )
    for _ in range(2):
        state = ctx.run(ctx.on.config_changed(), state)
    assert state.unit_status == testing.ActiveStatus("healthy, 3 members, leader etcd/0")

    def refuse(*_: object, **__: object) -> None:
        pytest.fail("read relation data")

    monkeypatch.setattr(charm.EtcdCharm, "reconcile", lambda self: pytest.fail("reconciled"))
    monkeypatch.setattr(etcd_peers, "read_peer_unit", refuse)
    monkeypatch.setattr(etcd_peers, "read_peer_app", refuse)
    calls = len(fake_etcd.calls)
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == state.unit_status
    assert ("member-list",) in fake_etcd.calls[calls:]  # etcd itself was asked

"""Juju's event semantics in the offline model, seen from inside the charms.

The recorder test charm (tests/model/charms/recorder) appends every event it sees, as it saw
it, to one shared log in the order the units ran: the hook or action, whether the unit was
leader, the remote unit and application, relation-list, the clock. The events bundle deploys
it twice (alpha feeds beta) with a tracer subordinate on every beta unit.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaji import pki
from kaji.model.engine import Model, ModelError

from .conftest import ROOT, TEST_BUNDLES, TEST_CHARMS, rendered_files

EVENTS = TEST_BUNDLES / "events.yaml"
MINUTE = 60.0


@pytest.fixture
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the recorder and tracer charms log every event (KAJI_TEST_RECORDER_DIR)."""
    directory = tmp_path / "recorded"
    monkeypatch.setenv("KAJI_TEST_RECORDER_DIR", str(directory))
    return directory


def recorded(log_dir: Path, kind: str = "jsonl") -> list[dict[str, Any]]:
    path = log_dir / f"events.{kind}"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def hooks(entries: list[dict[str, Any]], unit: str) -> list[str]:
    return [e["hook"] for e in entries if e["unit"] == unit]


def deploy(
    directory: Path,
    *,
    seed: int | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    settle: bool = True,
) -> Model:
    """The events bundle, with extra application options when given."""
    bundle = EVENTS
    if options:
        data = yaml.safe_load(EVENTS.read_text())
        for app, values in options.items():
            data["applications"][app]["options"] = values
        bundle = directory.parent / "bundles" / "events.yaml"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_text(yaml.safe_dump(data))
    model = Model.create(directory, seed=seed)
    model.deploy(bundle, charms_dir=TEST_CHARMS, settle=settle)
    return model


def observable(model: Model) -> str:
    """Everything an action must leave alone: databags, secrets, statuses, queues, files."""
    w = model.world
    return json.dumps(
        [
            {r.id: [r.app_data, r.unit_data] for r in w.relations.values()},
            {s.id: [s.revisions, s.latest, s.tracked] for s in w.secrets.values()},
            {n: [u.status, u.error, [str(e) for e in u.queue]] for n, u in w.units.items()},
            {a.name: [a.leader, a.status] for a in w.apps.values()},
            {u: sorted(f) for u, f in rendered_files(model).items()},
        ],
        sort_keys=True,
        default=str,
    )


# -- leadership ----------------------------------------------------------------------------------


def _check_removal_of_the_leader(model: Model, log_dir: Path, leader: str) -> str:
    """The removed leader leads through its own teardown; the survivors get none until then."""
    app = leader.split("/")[0]
    start = len(recorded(log_dir))
    model.remove_unit(leader)
    after = recorded(log_dir)[start:]
    gone = next(i for i, e in enumerate(after) if e["unit"] == leader and e["hook"] == "remove")
    own = [e for e in after[: gone + 1] if e["unit"] == leader]
    assert {"mates-relation-departed", "feed-relation-broken", "stop", "remove"} <= {
        e["hook"] for e in own
    }
    assert all(e["leader"] for e in own), own
    before_gone = [e for e in after[:gone] if e["unit"].startswith(f"{app}/")]
    assert not [e for e in before_gone if e["unit"] != leader and e["leader"]]
    elected = [e for e in after if e["hook"] == "leader-elected" and e["unit"].startswith(app)]
    assert len(elected) == 1
    assert after.index(elected[0]) > gone
    assert elected[0]["leader"]
    assert model.world.apps[app].leader == elected[0]["unit"]
    return str(elected[0]["unit"])


def test_a_removed_leader_leads_until_it_is_gone_then_a_survivor_is_elected(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir)
    assert model.world.apps["alpha"].leader == "alpha/0"
    start = len(recorded(log_dir))
    assert _check_removal_of_the_leader(model, log_dir, "alpha/0") == "alpha/1"
    # The survivor did run hooks while the leader was going, as a minion.
    survivor = [e for e in recorded(log_dir)[start:] if e["unit"] == "alpha/1"]
    assert survivor[0]["hook"] == "mates-relation-departed"
    assert not survivor[0]["leader"]
    assert model.units_of("alpha")[0].status[0] == "active"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_removed_leader_leads_until_gone_in_any_order(
    tmp_path: Path, log_dir: Path, seed: int
) -> None:
    model = deploy(tmp_path / "model", seed=seed)
    try:
        model.add_unit("alpha")
        _check_removal_of_the_leader(model, log_dir, str(model.world.apps["alpha"].leader))
    finally:
        model.destroy()


def test_with_a_seed_any_survivor_may_be_elected(tmp_path: Path, log_dir: Path) -> None:
    elected = set()
    for seed in range(1, 7):
        model = deploy(tmp_path / f"seed-{seed}", seed=seed)
        try:
            model.add_unit("alpha")
            elected.add(_check_removal_of_the_leader(model, log_dir, "alpha/0"))
        finally:
            model.destroy()
    assert elected == {"alpha/1", "alpha/2"}


def test_units_run_install_config_changed_and_start_before_any_leader(
    model_dir: Path, log_dir: Path
) -> None:
    deploy(model_dir)
    entries = recorded(log_dir)
    for app in ("alpha", "beta", "tracer"):
        mine = [e for e in entries if e["unit"].startswith(f"{app}/")]
        first = next(i for i, e in enumerate(mine) if e["hook"] == "leader-elected")
        assert mine[first]["unit"] == f"{app}/0"
        assert not [e for e in mine[:first] if e["leader"]], mine[:first]
        assert mine[0]["hook"] == "install"
    # Without a seed, the first unit runs leader-elected after install, before config-changed.
    assert hooks(entries, "alpha/0")[:4] == [
        "install",
        "mates-relation-created",
        "feed-relation-created",
        "leader-elected",
    ]


def test_with_a_seed_leader_election_may_come_at_any_point_of_the_first_lifecycle(
    tmp_path: Path, log_dir: Path
) -> None:
    before_election: set[tuple[str, ...]] = set()
    leader_in_install = set()
    for seed in range(1, 13):
        start = len(recorded(log_dir))
        model = deploy(tmp_path / f"seed-{seed}", seed=seed)
        model.destroy()
        mine = [e for e in recorded(log_dir)[start:] if e["unit"].startswith("alpha/")]
        first = next(i for i, e in enumerate(mine) if e["hook"] == "leader-elected")
        assert mine[first]["unit"] == "alpha/0"
        assert next(e["hook"] for e in mine if e["unit"] == "alpha/0") == "install"
        # Only the unit that is about to run leader-elected may have seen is-leader.
        assert not [e for e in mine[:first] if e["leader"] and e["unit"] != "alpha/0"]
        own = [e for e in mine[:first] if e["unit"] == "alpha/0"]
        before_election.add(
            tuple(e["hook"] for e in own if e["hook"] in ("config-changed", "start"))
        )
        leader_in_install.add(own[0]["leader"])
    assert before_election >= {(), ("config-changed",), ("config-changed", "start")}
    assert leader_in_install == {True, False}


# -- subordinates --------------------------------------------------------------------------------


def test_a_subordinate_arrives_once_its_principal_is_in_the_container_relation(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir, settle=False)
    assert not [n for n in model.world.units if n.startswith("tracer/")]
    model.settle()
    entries = recorded(log_dir)
    tracers = {u.principal: n for n, u in model.world.units.items() if u.app == "tracer"}
    assert set(tracers) == {"beta/0", "beta/1"}
    for principal, tracer in tracers.items():
        order = [(e["unit"], e["hook"]) for e in entries]
        entered = order.index((principal, "trace-relation-created"))
        assert order.index((tracer, "install")) > entered
        own = hooks(entries, tracer)
        assert own[:2] == ["install", "principal-relation-created"]
        assert "start" in own
        # The principal saw no unit in relation-list until the subordinate joined.
        created = next(
            e for e in entries if e["unit"] == principal and e["hook"] == "trace-relation-created"
        )
        assert created["units"] == []
    assert model.world.units["tracer/0"].status == ("active", "tracing")


# -- application data ----------------------------------------------------------------------------


def test_application_data_changes_arrive_with_no_remote_unit(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir)
    start = len(recorded(log_dir))
    model.set_config("alpha", {"word": "two"})
    changed = [
        e
        for e in recorded(log_dir)[start:]
        if e["unit"].startswith("beta/") and e["hook"] == "source-relation-changed"
    ]
    assert {e["unit"] for e in changed} == {"beta/0", "beta/1"}
    assert all(e["remote_unit"] is None and e["remote_app"] == "alpha" for e in changed)
    # A unit's own databag change still names the unit.
    start = len(recorded(log_dir))
    model.run_action("alpha/1", "touch")
    changed = [e for e in recorded(log_dir)[start:] if e["hook"] == "source-relation-changed"]
    assert {(e["unit"], e["remote_unit"]) for e in changed} == {
        ("beta/0", "alpha/1"),
        ("beta/1", "alpha/1"),
    }


# -- actions -------------------------------------------------------------------------------------


def test_an_action_runs_with_validated_params_then_collect_status_and_changes_nothing(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir)
    model.world.units["alpha/0"].status = ("waiting", "as a previous dispatch left it")
    before = observable(model)
    start = len(recorded(log_dir))
    record = model.run_action("alpha/0", "describe", {"tag": "x"})
    assert record["status"] == "completed", record
    assert record["results"] == {
        "unit": "alpha/0",
        "leader": "True",
        "verbose": "False",
        "tag": "x",
    }
    assert record["params"] == {"tag": "x", "verbose": False}  # the schema's default filled in
    assert record["log"] == ["describing"]
    assert [e["hook"] for e in recorded(log_dir)[start:]] == ["describe"]
    # collect-status ran after the action, as ops runs it: the status is the charm's again.
    assert model.world.units["alpha/0"].status == ("active", "recording (v1)")
    model.world.units["alpha/0"].status = ("waiting", "as a previous dispatch left it")
    assert observable(model) == before
    assert model.pending() == 0
    # The leader syntax of juju run.
    assert model.run_action("beta/leader", "describe")["unit"] == "beta/0"


def test_action_params_are_validated_as_juju_does(model_dir: Path) -> None:
    model = deploy(model_dir)
    with pytest.raises(ModelError, match=r"validation failed.*Additional properties"):
        model.run_action("alpha/0", "describe", {"colour": "red"})
    with pytest.raises(ModelError, match=r"validation failed.*not of type 'boolean'"):
        model.run_action("alpha/0", "describe", {"verbose": "yes"})
    with pytest.raises(ModelError, match=r"validation failed.*'message' is a required property"):
        model.run_action("alpha/0", "fail")
    with pytest.raises(ModelError, match="has no action 'dance'"):
        model.run_action("alpha/0", "dance")
    assert not model.world.actions


def test_failing_and_crashing_actions_fail_without_putting_the_unit_in_error(
    model_dir: Path,
) -> None:
    model = deploy(model_dir)
    failed = model.run_action("alpha/1", "fail", {"message": "not today"})
    assert (failed["status"], failed["message"]) == ("failed", "not today")
    crashed = model.run_action("alpha/1", "crash")
    assert (crashed["status"], crashed["message"]) == ("failed", "exit status 1")
    assert model.world.units["alpha/1"].error is None
    assert "RuntimeError: crashed on purpose" in model.log_path("alpha/1").read_text()


def test_an_action_that_writes_data_is_seen_by_the_model(model_dir: Path) -> None:
    model = deploy(model_dir)
    before = observable(model)
    assert model.run_action("alpha/0", "touch")["results"] == {"touched": "yes"}
    rel = model.relation_between("alpha", "beta")
    assert rel is not None
    assert rel.unit_data["alpha/0"]["touched"] == "yes"
    assert observable(model) != before


def test_removing_a_unit_with_a_queued_action(model_dir: Path, log_dir: Path) -> None:
    model = deploy(model_dir)
    # An installed unit runs its queued action before its teardown hooks (Juju's uniter
    # resolves actions first, dying or not).
    start = len(recorded(log_dir))
    queued = model.run_action("alpha/1", "describe", settle=False)
    model.remove_unit("alpha/1", settle=False)
    model.settle()
    assert queued["status"] == "completed"
    assert hooks(recorded(log_dir)[start:], "alpha/1")[0] == "describe"
    # A unit removed before it ever ran cancels its actions: "unit removed", as Juju's
    # cleanup of a removed unit does.
    (new,) = model.add_unit("alpha", settle=False)
    pending = model.run_action(new, "describe", settle=False)
    model.remove_unit(new, settle=False)
    model.settle()
    assert (pending["status"], pending["message"]) == ("cancelled", "unit removed")
    assert new not in model.world.units


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    return subprocess.run(
        [sys.executable, "-m", "kaji.model", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def test_the_command_line_runs_actions_waits_refreshes_and_attaches(tmp_path: Path) -> None:
    deployed = _cli("deploy", str(EVENTS), "--charms-dir", str(TEST_CHARMS), cwd=tmp_path)
    try:
        assert deployed.returncode == 0, deployed.stderr
        ran = _cli("run-action", "alpha/0", "describe", "tag=seven", "verbose=true", cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        shown = yaml.safe_load(ran.stdout)["alpha/0"]
        assert shown["status"] == "completed"
        assert shown["results"] == {
            "unit": "alpha/0",
            "leader": "True",
            "verbose": "True",
            "tag": "seven",
        }
        # Values are YAML, as juju run reads them: 7 is an int, refused for a string param...
        refused = _cli("run-action", "alpha/0", "describe", "tag=7", cwd=tmp_path)
        assert refused.returncode == 1
        assert "validation failed" in refused.stderr
        # ...unless --string-args.
        strings = _cli("run-action", "alpha/0", "describe", "--string-args", "tag=7", cwd=tmp_path)
        assert yaml.safe_load(strings.stdout)["alpha/0"]["results"]["tag"] == "7"
        failed = _cli("run-action", "alpha/1", "fail", "message=nope", cwd=tmp_path)
        assert failed.returncode == 1
        assert yaml.safe_load(failed.stdout)["alpha/1"]["message"] == "nope"

        waited = _cli("wait", "--minutes", "10", cwd=tmp_path)
        assert waited.returncode == 0, waited.stderr
        assert "waited 10 minutes" in waited.stdout
        state = json.loads((tmp_path / ".kaji-model/model.json").read_text())
        assert state["units"]["beta/1"]["hooks_by_kind"]["update-status"] == 2
        assert set(state["actions"]) == {"1", "2", "3"}  # the refused one never queued

        blob = tmp_path / "blob.txt"
        blob.write_text("hello\n")
        attached = _cli("attach-resource", "alpha", f"blob={blob}", cwd=tmp_path)
        assert attached.returncode == 0, attached.stderr
        refreshed = _cli("refresh", "beta", cwd=tmp_path)
        assert refreshed.returncode == 0, refreshed.stderr
        state = json.loads((tmp_path / ".kaji-model/model.json").read_text())
        assert state["units"]["alpha/0"]["hooks_by_kind"]["upgrade-charm"] == 1
        assert state["units"]["beta/0"]["hooks_by_kind"]["upgrade-charm"] == 1
        assert state["apps"]["beta"]["revision"] == 1
    finally:
        _cli("destroy", cwd=tmp_path)


# -- time: update-status and the clock -----------------------------------------------------------


def test_wait_runs_update_status_every_five_minutes_on_the_models_clock(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir)
    t0 = model.world.clock
    start = len(recorded(log_dir))
    model.wait(15)
    assert model.world.clock == t0 + 15 * MINUTE
    ticks = [e for e in recorded(log_dir)[start:] if e["hook"] == "update-status"]
    for unit in model.world.units:
        times = [e["time"] for e in ticks if e["unit"] == unit]
        assert [round(t - t0) for t in times] == [300, 600, 900], unit
    assert all(u.hooks_by_kind["update-status"] == 3 for u in model.world.units.values())


def test_with_a_seed_update_status_intervals_vary_by_a_fifth(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir, seed=7)
    start = len(recorded(log_dir))
    model.wait(60)
    ticks = [e for e in recorded(log_dir)[start:] if e["hook"] == "update-status"]
    gaps = set()
    for unit in model.world.units:
        times = [e["time"] for e in ticks if e["unit"] == unit]
        gaps |= {round(b - a) for a, b in itertools.pairwise(times)}
    assert all(240 <= g <= 360 for g in gaps), gaps
    assert len(gaps) > 3


def test_a_year_later_certificates_have_been_renewed_in_time(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir, options={"alpha": {"cert-days": 30}})
    t0 = model.world.clock
    model.wait(365 * 24 * 60)
    assert model.world.clock == t0 + 365 * 86400
    notes = recorded(log_dir, "notes")
    for unit in ("alpha/0", "alpha/1"):
        issued = [n["issued"] for n in notes if n["unit"] == unit and n["what"] == "cert-issued"]
        # Renewed when a third of the 30 days is left: every 20 days, within a day.
        assert 17 <= len(issued) <= 19, issued
        assert all(19 * 86400 <= b - a <= 21 * 86400 for a, b in itertools.pairwise(issued))
        checks = [n for n in notes if n["unit"] == unit and n["what"] == "cert-check"]
        assert checks
        assert not [c for c in checks if c["expired"]]
        cert = (model.unit_root(unit) / "etc/recorder/cert.pem").read_text()
        assert pki.read_certificate(cert).not_after > model.now
        assert not pki.renewal_due(cert, model.now)


# -- refresh and resources -----------------------------------------------------------------------


def _charm_copy(tmp_path: Path, version: str) -> Path:
    copy = tmp_path / f"recorder-v{version}"
    shutil.copytree(TEST_CHARMS / "recorder", copy)
    source = copy / "src" / "charm.py"
    source.write_text(source.read_text().replace('VERSION = "1"', f'VERSION = "{version}"'))
    return copy


def test_refresh_runs_the_new_code_upgrade_charm_then_config_changed(
    tmp_path: Path, log_dir: Path
) -> None:
    model = deploy(tmp_path / "model")
    try:
        start = len(recorded(log_dir))
        model.refresh("alpha", _charm_copy(tmp_path, "2"))
        after = recorded(log_dir)[start:]
        for unit in ("alpha/0", "alpha/1"):
            own = [e for e in after if e["unit"] == unit]
            assert [e["hook"] for e in own[:2]] == ["upgrade-charm", "config-changed"]
            assert {e["version"] for e in own} == {"2"}
        assert not [e for e in after if e["unit"].startswith("beta/")]
        assert model.world.apps["alpha"].revision == 1
        assert model.world.units["alpha/0"].status == ("active", "recording (v2)")
        assert model.world.units["beta/0"].status == ("active", "recording (v1)")
        # A new unit runs the new code from install on, and no upgrade-charm.
        start = len(recorded(log_dir))
        (added,) = model.add_unit("alpha")
        own = [e for e in recorded(log_dir)[start:] if e["unit"] == added]
        assert {e["version"] for e in own} == {"2"}
        assert "upgrade-charm" not in [e["hook"] for e in own]
    finally:
        model.destroy()


def test_refresh_refuses_a_charm_that_would_break_a_relation(tmp_path: Path) -> None:
    model = deploy(tmp_path / "model")
    try:
        broken = _charm_copy(tmp_path, "3")
        meta = yaml.safe_load((broken / "charmcraft.yaml").read_text())
        del meta["provides"]["feed"]
        (broken / "charmcraft.yaml").write_text(yaml.safe_dump(meta))
        with pytest.raises(ModelError, match="needs endpoint 'feed'"):
            model.refresh("alpha", broken)
        assert model.world.apps["alpha"].revision == 0
        assert model.pending() == 0
    finally:
        model.destroy()


def test_attach_resource_runs_upgrade_charm_with_the_file_behind_resource_get(
    tmp_path: Path, log_dir: Path
) -> None:
    model = deploy(tmp_path / "model")
    try:
        installs = [e for e in recorded(log_dir) if e["hook"] == "install" and "blob" in e]
        assert installs
        assert all(e["blob"] is None for e in installs)  # resource-get fails
        blob = tmp_path / "blob-v1.txt"
        blob.write_text("hello\n")
        start = len(recorded(log_dir))
        assert model.attach_resource("alpha", "blob", blob)
        after = recorded(log_dir)[start:]
        upgrades = [e for e in after if e["hook"] == "upgrade-charm"]
        assert {e["unit"] for e in upgrades} == {"alpha/0", "alpha/1"}
        assert {e["blob"] for e in upgrades} == {"hello\n"}
        assert hooks(after, "alpha/0")[:2] == ["upgrade-charm", "config-changed"]
        # The same bytes again change nothing.
        start = len(recorded(log_dir))
        assert not model.attach_resource("alpha", "blob", blob)
        assert recorded(log_dir)[start:] == []
        with pytest.raises(ModelError, match="no resource 'image'"):
            model.attach_resource("alpha", "image", blob)
    finally:
        model.destroy()


# -- secrets' timed and obsolete-revision hooks --------------------------------------------------


def _shared(model: Model) -> Any:
    (record,) = [s for s in model.world.secrets.values() if s.owner == "alpha"]
    return record


def test_secret_rotate_on_its_policy_and_secret_remove_for_untracked_revisions(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir, options={"alpha": {"rotate": "hourly"}})
    record = _shared(model)
    t0 = model.world.clock
    start = len(recorded(log_dir))
    model.wait(59)
    assert not [e for e in recorded(log_dir)[start:] if e["hook"].startswith("secret-")]
    model.wait(2)
    after = recorded(log_dir)[start:]
    rotated = [e for e in after if e["hook"] == "secret-rotate"]
    assert [(e["unit"], round(e["time"] - t0)) for e in rotated] == [("alpha/0", 3600)]
    assert record.latest == 2
    # Every consumer heard of it and moved to revision 2; revision 1 is tracked by no one,
    # so its owner (the leader) is told to remove it, and does.
    changed = {e["unit"] for e in after if e["hook"] == "secret-changed"}
    assert changed == {"beta/0", "beta/1"}
    removes = [(e["unit"], e["revision"]) for e in after if e["hook"] == "secret-remove"]
    assert removes == [("alpha/0", 1)]
    assert set(record.revisions) == {2}
    for unit in ("beta/0", "beta/1"):
        assert (model.unit_root(unit) / "etc/recorder/shared").read_text() == "2\n"
    model.wait(60)
    assert record.latest == 3
    assert set(record.revisions) == {3}
    assert record.next_rotate == t0 + 3 * 3600


def test_secret_expired_at_expiry_and_again_until_the_revision_is_removed(
    model_dir: Path, log_dir: Path
) -> None:
    model = deploy(model_dir, options={"alpha": {"expire-minutes": 30, "remove-expired": False}})
    t0 = model.world.clock
    start = len(recorded(log_dir))
    model.wait(41)
    expired = [e for e in recorded(log_dir)[start:] if e["hook"] == "secret-expired"]
    assert [(e["unit"], e["revision"], round(e["time"] - t0)) for e in expired] == [
        ("alpha/0", 1, 1800),
        ("alpha/0", 1, 2100),
        ("alpha/0", 1, 2400),
    ]


def test_a_removed_expired_revision_is_not_expired_again(model_dir: Path, log_dir: Path) -> None:
    model = deploy(model_dir, options={"alpha": {"expire-minutes": 30}})
    record = _shared(model)
    t0 = model.world.clock
    start = len(recorded(log_dir))
    model.wait(65)
    expired = [e for e in recorded(log_dir)[start:] if e["hook"] == "secret-expired"]
    # Revision 1 expires at 30 minutes; the charm makes revision 2 (expiring 30 minutes
    # later) and removes 1; no secret-remove for 1 follows, it is gone.
    assert [(e["revision"], round(e["time"] - t0)) for e in expired] == [(1, 1800), (2, 3600)]
    assert not [e for e in recorded(log_dir)[start:] if e["hook"] == "secret-remove"]
    assert set(record.revisions) == {3}

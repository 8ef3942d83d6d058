"""The model's Juju semantics, proven with small test charms (tests/model/charms).

provider (2 units, peers count members, leader shares an app secret) -- requirer (2 units,
consumes the secret and the provider addresses) -- sub (subordinate on every requirer, its
leader indexes the units over the peer relation).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from kaji.model.bundle import BundleError
from kaji.model.engine import Model, ModelError, NotConverging
from kaji.model.status import format_status, machine_services

from .conftest import ROOT, TEST_BUNDLES, TEST_CHARMS, machine_file, rendered_files

BUNDLE = TEST_BUNDLES / "test.yaml"


def deploy(model_dir: Path, *, seed: int | None = None, processes: bool = False) -> Model:
    model = Model.create(model_dir, seed=seed, processes=processes)
    model.deploy(BUNDLE)
    return model


def statuses(model: Model) -> dict[str, tuple[str, str]]:
    return {n: ("error", u.error) if u.error else u.status for n, u in model.world.units.items()}


def shared_key(model: Model) -> str:
    (record,) = [s for s in model.world.secrets.values() if s.owner == "provider"]
    return record.revisions[record.latest]["key"]


def test_deploy_converges_with_every_unit_active(model_dir: Path) -> None:
    model = deploy(model_dir)
    assert statuses(model) == {
        "provider/0": ("active", "members: 2"),
        "provider/1": ("active", "members: 2"),
        "requirer/0": ("active", "providers: 2"),
        "requirer/1": ("active", "providers: 2"),
        "sub/0": ("active", "index 0"),
        "sub/1": ("active", "index 1"),
    }
    assert model.pending() == 0
    assert {a.name: a.leader for a in model.world.apps.values()} == {
        "provider": "provider/0",
        "requirer": "requirer/0",
        "sub": "sub/0",
    }


def test_machines_have_their_own_address_hostname_and_root(model_dir: Path) -> None:
    model = deploy(model_dir)
    machines = {n: model.world.machines[u.machine] for n, u in model.world.units.items()}
    principals = [n for n, u in model.world.units.items() if u.principal is None]
    assert len({machines[n].address for n in principals}) == 4
    prefix = f"127.{model.world.network['block']}."  # the model's own loopback range
    assert all(machines[n].address.startswith(prefix) for n in principals)
    # Provider units publish the ingress address of their binding: their machine's address.
    rel = model.relation_between("provider", "requirer")
    assert rel is not None
    for unit in ("provider/0", "provider/1"):
        assert rel.unit_data[unit]["address"] == machines[unit].address
        assert rel.unit_data[unit]["ingress-address"] == machines[unit].address
        assert rel.unit_data[unit]["hostname"] == machines[unit].hostname
    expected = sorted(machines[u].address for u in ("provider/0", "provider/1"))
    for unit in ("requirer/0", "requirer/1"):
        assert machine_file(model, unit, "/etc/requirer/providers").split() == expected


def test_subordinates_follow_their_principals_and_share_the_machine(model_dir: Path) -> None:
    model = deploy(model_dir)
    for sub in ("sub/0", "sub/1"):
        unit = model.world.units[sub]
        principal = model.world.units[unit.principal or ""]
        assert principal.app == "requirer"
        assert unit.machine == principal.machine
        # The flavour the principal sent over the container relation is on the shared root.
        assert machine_file(model, principal.name, "/etc/sub/flavour") == "mint\n"
    assert {machine_file(model, r, "/etc/sub/index") for r in ("requirer/0", "requirer/1")} == {
        "0\n",
        "1\n",
    }
    model.add_unit("requirer")
    assert model.world.units["sub/2"].principal == "requirer/2"
    assert machine_file(model, "requirer/2", "/etc/sub/index") == "2\n"


def test_app_secret_is_granted_read_and_revised(model_dir: Path) -> None:
    model = deploy(model_dir)
    key = shared_key(model)
    for unit in ("requirer/0", "requirer/1"):
        assert machine_file(model, unit, "/etc/requirer/key") == key + "\n"
    (record,) = model.world.secrets.values()
    assert record.owner_is_app
    assert record.labels == {"provider": "provider-key"}
    rel = model.relation_between("provider", "requirer")
    assert rel is not None
    assert record.grants == {rel.id: ["requirer"]}

    before = model.counters()
    model.set_config("provider", {"key-generation": "2"})
    assert record.latest == 2
    new_key = shared_key(model)
    assert new_key != key
    for unit in ("requirer/0", "requirer/1"):
        assert machine_file(model, unit, "/etc/requirer/key") == new_key + "\n"
        # The consumers heard of the new revision through secret-changed, and track it.
        assert model.world.units[unit].hooks_by_kind.get("secret-changed") == 1
        assert record.tracked[unit] == 2
    # Owners get no secret-changed.
    assert "secret-changed" not in model.world.units["provider/1"].hooks_by_kind
    assert model.counters()["requirer/0"]["hooks"] - before["requirer/0"]["hooks"] == 1


def test_app_data_is_written_by_the_leader_only(model_dir: Path) -> None:
    model = deploy(model_dir)
    peers = model.peer_relation("provider")
    assert peers is not None
    assert json.loads(peers.app_data["provider"]["members"]) == ["provider/0", "provider/1"]
    for unit in ("provider/0", "provider/1"):
        assert machine_file(model, unit, "/etc/provider/members").split() == [
            "provider/0",
            "provider/1",
        ]


def test_add_and_remove_units_update_every_side(model_dir: Path) -> None:
    model = deploy(model_dir)
    added = model.add_unit("provider", 2)
    assert added == ["provider/2", "provider/3"]
    assert all(model.world.units[n].status == ("active", "members: 4") for n in added)
    assert len(machine_file(model, "requirer/1", "/etc/requirer/providers").split()) == 4

    leader_machine = model.world.units["provider/0"].machine
    model.remove_unit("provider/0")
    assert "provider/0" not in model.world.units
    assert leader_machine not in model.world.machines
    assert not model.machine_root(leader_machine).exists()
    # Leadership moved; the new leader recomputed the members and kept the secret.
    assert model.world.apps["provider"].leader == "provider/1"
    assert model.world.units["provider/1"].hooks_by_kind["leader-elected"] == 1
    assert statuses(model)["provider/3"] == ("active", "members: 3")
    remaining = sorted(
        model.world.machines[model.world.units[u].machine].address
        for u in ("provider/1", "provider/2", "provider/3")
    )
    assert machine_file(model, "requirer/0", "/etc/requirer/providers").split() == remaining
    # Every remaining unit saw provider/0 depart; the departed unit broke its relations.
    for unit in ("provider/1", "requirer/0", "requirer/1"):
        assert model.world.units[unit].hooks_by_kind["relation-departed"] >= 1
        assert all("provider/0" not in j for j in model.world.units[unit].joined.values())


def test_removing_a_principal_removes_its_subordinate(model_dir: Path) -> None:
    model = deploy(model_dir)
    model.remove_unit("requirer/1")
    assert "sub/1" not in model.world.units
    assert statuses(model)["sub/0"] == ("active", "index 0")
    ring = model.peer_relation("sub")
    assert ring is not None
    assert json.loads(ring.app_data["sub"]["index"]) == {"sub/0": 0}
    with pytest.raises(ModelError, match="subordinate"):
        model.remove_unit("sub/0")
    with pytest.raises(ModelError, match="subordinate"):
        model.add_unit("sub")


def test_leader_change_keeps_the_secret_and_the_data(model_dir: Path) -> None:
    model = deploy(model_dir)
    key = shared_key(model)
    rel = model.relation_between("provider", "requirer")
    assert rel is not None
    before = dict(rel.app_data["provider"])
    model.set_leader("provider/1")
    assert model.world.apps["provider"].leader == "provider/1"
    assert shared_key(model) == key
    assert len(model.world.secrets) == 1
    assert rel.app_data["provider"] == before


def test_config_change_reaches_every_unit_and_is_type_checked(model_dir: Path) -> None:
    model = deploy(model_dir)
    model.set_config("requirer", {"flavour": "lime"})
    for unit in ("requirer/0", "requirer/1"):
        assert machine_file(model, unit, "/etc/sub/flavour") == "lime\n"
    with pytest.raises(ModelError, match="not an int"):
        model.set_config("provider", {"key-generation": "two"})
    with pytest.raises(ModelError, match="not an option"):
        model.set_config("provider", {"nope": "1"})


def test_settled_model_rewrites_nothing(model_dir: Path) -> None:
    model = deploy(model_dir)
    files = rendered_files(model)
    for hook in ("update-status", "config-changed"):
        stats = model.run_everywhere(hook)
        assert stats is not None
        assert stats.hooks == len(model.world.units)
        assert stats.total("files_written") == 0
        assert stats.total("services_restarted") == 0
        assert stats.total("services_started") == 0
    assert rendered_files(model) == files


def test_hooks_and_host_changes_are_counted_per_unit(model_dir: Path) -> None:
    model = deploy(model_dir)
    provider = model.world.units["provider/0"]
    assert provider.counters["hooks"] == sum(provider.hooks_by_kind.values())
    assert provider.hooks_by_kind["install"] == 1
    # The member list is rewritten as the leader learns of peers (none, one, two members).
    assert provider.counters["files_written"] == 4
    assert provider.counters["services_started"] == 1
    assert provider.counters["services_restarted"] == 0
    model.set_config("provider", {"greeting": "hi"})
    # The greeting file is watched by the daemon: one write, one restart per provider unit.
    assert provider.counters["files_written"] == 5
    assert provider.counters["services_restarted"] == 1


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_shuffled_delivery_converges_to_the_same_machines(tmp_path: Path, seed: int) -> None:
    reference = deploy(tmp_path / "reference")
    shuffled = deploy(tmp_path / f"seed-{seed}", seed=seed)
    assert statuses(shuffled) == statuses(reference)

    def comparable(model: Model) -> dict[str, dict[str, bytes]]:
        files = rendered_files(model)
        key = shared_key(model).encode()
        prefix = f"127.{model.world.network['block']}.".encode()  # each model has its range
        return {
            unit: {
                p: c.replace(key, b"<key>").replace(prefix, b"127.B.")
                for p, c in f.items()
                # Which sub unit (and so which index) lands on which principal depends on the
                # order the principals enter the container relation: compared below.
                if "services" not in p and p != "etc/sub/index"
            }
            for unit, f in files.items()
        }

    assert comparable(shuffled) == comparable(reference)

    def indexes(model: Model) -> list[str]:
        principals = ("requirer/0", "requirer/1")
        return sorted(machine_file(model, r, "/etc/sub/index") for r in principals)

    assert indexes(shuffled) == indexes(reference) == ["0\n", "1\n"]


def test_a_charm_that_never_settles_is_reported(model_dir: Path) -> None:
    model = Model.create(model_dir)
    model.deploy(TEST_BUNDLES / "flapper.yaml", settle=False)
    with pytest.raises(NotConverging) as caught:
        model.settle(max_hooks=200)
    assert {u for u, _ in caught.value.busiest} == {"flapper/0", "flapper/1"}
    assert "did not converge within 200 hooks" in str(caught.value)


def test_bad_bundle_is_refused_before_anything_runs(tmp_path: Path, model_dir: Path) -> None:
    bad = tmp_path / "bundles" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text(
        yaml.safe_dump(
            {
                "default-base": "ubuntu@24.04",
                "applications": {
                    "provider": {"charm": "./kaji-test-provider.charm", "num_units": 1},
                    "requirer": {"charm": "./kaji-test-requirer.charm", "num_units": 1},
                    "sub": {"charm": "./kaji-test-sub.charm", "num_units": 2},
                },
                "relations": [
                    ["provider:database", "requirer:db"],
                    ["sub:host", "provider:cluster"],
                    ["sub:host", "requirer:db"],
                ],
            }
        )
    )
    model = Model.create(model_dir)
    with pytest.raises(BundleError) as caught:
        model.deploy(bad, charms_dir=TEST_CHARMS)
    text = str(caught.value)
    assert "has no endpoint 'database'" in text
    assert "interfaces differ (test-host vs test-db)" in text
    assert "is a subordinate; it takes no num_units" in text
    assert len(caught.value.problems) >= 4
    assert model.world.units == {}


def test_charm_modules_stay_out_of_sys_modules(model_dir: Path) -> None:
    deploy(model_dir)
    assert "charm" not in sys.modules
    assert not [m for m in sys.modules if m.startswith("kaji_model_charm_")]
    assert str(TEST_CHARMS / "provider" / "src") not in sys.path


def test_model_persists_between_loads(model_dir: Path) -> None:
    model = deploy(model_dir)
    model.save()
    again = Model.load(model_dir)
    assert statuses(again) == statuses(model)
    assert again.world.to_json() == model.world.to_json()
    again.add_unit("provider")
    assert statuses(again)["provider/2"] == ("active", "members: 3")
    assert statuses(again)["provider/0"] == ("active", "members: 3")


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"


def test_cli_runs_real_processes_reports_them_and_destroy_stops_them(tmp_path: Path) -> None:
    bundle = str(BUNDLE)
    deployed = _cli("deploy", bundle, cwd=tmp_path)
    try:
        assert deployed.returncode == 0, deployed.stderr
        assert "provider/0*  active" in deployed.stdout
        assert "  sub/0*" in deployed.stdout
        running = machine_services(tmp_path / ".kaji-model/machines/0/root")
        assert [(s.name, s.state) for s in running] == [("provider-daemon", "running")]
        pid = running[0].pid
        assert pid is not None
        assert _alive(pid)
        assert f"provider-daemon: running (pid {pid})" in deployed.stdout
        assert ".kaji-model/machines/0/root" in deployed.stdout

        added = _cli("add-unit", "provider", "-n", "2", cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        assert "provider/3   active" in added.stdout
        removed = _cli("remove-unit", "provider/0", cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the removed unit's process must be stopped"
        configured = _cli("config", "requirer", "flavour=lime", cwd=tmp_path)
        assert configured.returncode == 0, configured.stderr
        refused = _cli("config", "provider", "key-generation=x", cwd=tmp_path)
        assert refused.returncode == 1
        assert "not an int" in refused.stderr
        status = _cli("status", "--format", "json", cwd=tmp_path)
        data = json.loads(status.stdout)
        assert {n: u["workload"] for n, u in data["units"].items()} == dict.fromkeys(
            [
                "provider/1",
                "provider/2",
                "provider/3",
                "requirer/0",
                "requirer/1",
                "sub/0",
                "sub/1",
            ],
            "active",
        )
        pids = [s["pid"] for m in data["machines"].values() for s in m["services"] if s["pid"]]
        assert len(pids) == 3
    finally:
        destroyed = _cli("destroy", cwd=tmp_path)
    assert destroyed.returncode == 0, destroyed.stderr
    assert "stopped 3 service(s)" in destroyed.stdout
    assert not (tmp_path / ".kaji-model").exists()
    assert not any(_alive(p) for p in pids)


def test_status_says_services_are_only_recorded_without_processes(model_dir: Path) -> None:
    model = deploy(model_dir)
    text = format_status(model)
    assert "provider-daemon: recorded only (model runs without processes)" in text
    assert "running (pid" not in text
    assert f"{model.machine_root(0)}" in text or "machines/0/root" in text


def _pack_provider(directory: Path) -> Path:
    """A packed kaji-test-provider.charm as charmcraft lays it out (metadata + config)."""
    source = TEST_CHARMS / "provider"
    meta = yaml.safe_load((source / "charmcraft.yaml").read_text())
    archive = directory / "kaji-test-provider.charm"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr(
            "metadata.yaml", yaml.safe_dump({k: v for k, v in meta.items() if k != "config"})
        )
        packed.writestr("config.yaml", yaml.safe_dump(meta["config"]))
        packed.write(source / "src" / "charm.py", "src/charm.py")
        packed.writestr("venv/ops/__init__.py", "raise ImportError('the model brings its own')\n")
    return archive


def test_a_packed_charm_runs_from_its_archive(tmp_path: Path, model_dir: Path) -> None:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    bundle = bundles / "test.yaml"
    shutil.copy(BUNDLE, bundle)
    archive = _pack_provider(bundles)
    model = Model.create(model_dir)
    model.deploy(bundle, charms_dir=TEST_CHARMS)
    assert model.code("provider").source == archive
    assert statuses(model)["provider/1"] == ("active", "members: 2")
    assert statuses(model)["requirer/0"] == ("active", "providers: 2")

    # The command line warns when the packed charm is older than the charm's source.
    os.utime(archive, (1_000_000_000, 1_000_000_000))
    result = _cli(
        "deploy",
        str(bundle),
        "--charms-dir",
        str(TEST_CHARMS),
        "--no-processes",
        "--model-dir",
        str(tmp_path / "cli-model"),
        cwd=tmp_path,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert f"warning: {archive} is older than {TEST_CHARMS / 'provider'}" in result.stderr
    finally:
        _cli("destroy", "--model-dir", str(tmp_path / "cli-model"), cwd=tmp_path)
    # --source runs the charm source even though the archive is there.
    sourced = Model.create(tmp_path / "sourced")
    sourced.deploy(bundle, charms_dir=TEST_CHARMS, from_source=True)
    assert sourced.code("provider").source == TEST_CHARMS / "provider"
    assert statuses(sourced)["provider/0"] == ("active", "members: 2")

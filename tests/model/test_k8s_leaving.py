"""The kaji bundle (HA overlay) when a leader leaves or leadership moves (issue 11).

A unit being removed stays leader through its own relation-departed, relation-broken, stop and
remove hooks (the offline model does as Juju 3.6 does); while its view of the remote units
shrinks it must not rewrite the application data the survivors' certificates live in. Unit 0
is the hard case (ops.testing once named the remote unit as the departing one for unit 0).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaji.model.engine import Model

from .test_k8s_bundle import HA, PEM, assert_all_active, deploy

#: The ``*-data`` fields of a kubeconfig hold base64 PEM.
B64_FIELD = re.compile(rb'"(?:certificate-authority|client-certificate)-data":\s*"([^"]+)"')


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[Model]:
    model = deploy(tmp_path / "model", overlays=(HA,))
    yield model
    model.destroy()


def _pems(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(where, PEM) of every PEM block in a databag value (JSON walked when it is JSON)."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = value
        if not isinstance(decoded, str):
            yield from _pems(decoded, path)
            return
        for i, match in enumerate(PEM.finditer(decoded.encode())):
            yield f"{path}#{i}", match.group(0).decode()
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _pems(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _pems(item, f"{path}[{i}]")


def databag_pems(model: Model, leaving: str) -> dict[str, str]:
    """Every PEM in every relation databag, except the leaving unit's own and those for it."""
    found: dict[str, str] = {}
    for rel in model.world.relations.values():
        bags = [(f"app:{app}", bag) for app, bag in rel.app_data.items()]
        bags += [(f"unit:{unit}", bag) for unit, bag in rel.unit_data.items() if unit != leaving]
        for owner, bag in bags:
            for key, value in bag.items():
                found.update(_pems(value, f"{rel}/{owner}/{key}"))
    return {where: pem for where, pem in found.items() if f"/{leaving}" not in where}


def machine_pems(model: Model, gone: int) -> dict[str, list[bytes]]:
    """The PEM blocks of every file on every machine but ``gone``, kubeconfig data decoded."""
    found: dict[str, list[bytes]] = {}
    for machine in model.world.machines:
        if machine == gone:
            continue
        root = model.machine_root(machine)
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            content = path.read_bytes()
            blocks = [m.group(0) for m in PEM.finditer(content)]
            for data in B64_FIELD.findall(content):
                blocks += [m.group(0) for m in PEM.finditer(base64.b64decode(data))]
            if blocks:
                found[f"{machine}:{path.relative_to(root)}"] = blocks
    return found


def service_starts(model: Model, gone: int) -> dict[str, tuple[Any, Any, list[str]]]:
    """(starts, restarts, argv) of every service on every machine but ``gone``."""
    found = {}
    for machine in model.world.machines:
        if machine == gone:
            continue
        root = model.machine_root(machine) / "var/lib/kaji"
        for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
            state = json.loads(path.read_text())
            if isinstance(state, dict) and "fingerprint" in state:
                argv = list((state.get("spec") or {}).get("argv") or [])
                found[f"{machine}:{path.stem}"] = (
                    state.get("starts"),
                    state.get("restarts"),
                    argv,
                )
    return found


def restarts_moved(model: Model, before: dict[str, dict[str, int]]) -> dict[str, int]:
    """Per surviving unit, how many services it started or restarted since ``before``."""
    moved = {}
    for name, counters in model.counters().items():
        old = before.get(name, {})
        n = sum(
            counters.get(k, 0) - old.get(k, 0) for k in ("services_started", "services_restarted")
        )
        if n:
            moved[name] = n
    return moved


def _remove_leader(model: Model, leader: str, *, flag: str | None = None) -> None:
    """Remove ``leader``: survivors keep every certificate and every service keeps running.

    ``flag``: the one command-line flag whose change may restart a surviving service (an etcd
    member leaving changes kube-apiserver's ``--etcd-servers``, leader or not).
    """
    app = leader.split("/")[0]
    model.set_leader(leader)
    assert model.world.apps[app].leader == leader
    assert_all_active(model)
    gone = model.world.units[leader].machine
    pems, files = databag_pems(model, leader), machine_pems(model, gone)
    services, counters = service_starts(model, gone), model.counters()
    assert pems
    assert files
    assert services
    model.remove_unit(leader)
    assert leader not in model.world.units
    assert model.world.apps[app].leader not in (None, leader)
    assert_all_active(model)
    now = databag_pems(model, leader)
    changed = sorted(w for w in pems if now.get(w) != pems[w])
    assert not changed, f"removing {leader} changed databag certificates: {changed}"
    assert not sorted(set(now) - set(pems)), "new certificates were issued"
    on_machines = machine_pems(model, gone)
    changed = sorted(p for p in files if on_machines.get(p) != files[p])
    assert not changed, f"removing {leader} changed certificate files: {changed}"
    restarted = {}
    for name, (starts, restarts, argv) in service_starts(model, gone).items():
        old_starts, old_restarts, old_argv = services[name]
        if (starts, restarts) != (old_starts, old_restarts):
            restarted[name] = sorted(set(argv) ^ set(old_argv))
    explained = {
        n: d for n, d in restarted.items() if d and all(a.startswith(f"{flag}=") for a in d)
    }
    assert restarted == explained, f"removing {leader} restarted {restarted}"
    moved = restarts_moved(model, counters)
    machines = {model.world.units[u].machine for u in moved}
    assert machines == {int(n.split(":")[0]) for n in explained}, moved


@pytest.mark.parametrize("leader", ["control-plane/0", "control-plane/1"])
def test_removing_the_control_plane_leader_reissues_nothing_and_restarts_nothing(
    ha: Model, leader: str
) -> None:
    _remove_leader(ha, leader)


@pytest.mark.parametrize("leader", ["etcd/0", "etcd/1"])
def test_removing_the_etcd_leader_reissues_nothing_and_restarts_only_for_the_member_list(
    ha: Model, leader: str
) -> None:
    _remove_leader(ha, leader, flag="--etcd-servers")


def test_update_status_after_leadership_moves_writes_and_restarts_nothing(ha: Model) -> None:
    for unit in ("control-plane/1", "etcd/2", "worker/1", "cni/3"):
        ha.set_leader(unit)
    assert_all_active(ha)
    bags = {r.id: json.dumps([r.app_data, r.unit_data]) for r in ha.world.relations.values()}
    for _ in range(2):
        stats = ha.run_everywhere("update-status")
        assert stats is not None
        writes = {u: c["files_written"] for u, c in stats.per_unit.items() if c["files_written"]}
        restarts = {
            u: c["services_restarted"] + c["services_started"]
            for u, c in stats.per_unit.items()
            if c["services_restarted"] + c["services_started"]
        }
        assert not writes, f"update-status wrote files: {writes}"
        assert not restarts, f"update-status restarted services: {restarts}"
        assert stats.hooks == len(ha.world.units), "update-status caused more hooks"
    assert {
        r.id: json.dumps([r.app_data, r.unit_data]) for r in ha.world.relations.values()
    } == bags
    assert_all_active(ha)

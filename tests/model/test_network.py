"""The model's network as Juju's: bind and ingress addresses differ; one loopback range per model.

Uses the small test charms: ``listener`` (a TCP server listening and advertising where its
config says) and ``sub`` (reads its container-scoped binding).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaji.model import network
from kaji.model.engine import Model, ModelError
from kaji.model.status import format_status, status_data

from .conftest import ROOT, TEST_BUNDLES

LISTENER = TEST_BUNDLES / "listener.yaml"


@pytest.fixture
def models(tmp_path: Path) -> Iterator[list[Model]]:
    """Models made by a test; each destroyed (processes stopped, range released) at the end."""
    made: list[Model] = []
    yield made
    for model in made:
        if (model.directory / "model.json").exists():
            model.destroy()


def _deploy(
    models: list[Model], directory: Path, *, processes: bool = False, **config: str
) -> Model:
    model = Model.create(directory, processes=processes)
    models.append(model)
    model.deploy(LISTENER, settle=False)
    if config:
        model.set_config("listener", config, settle=False)
    model.settle()
    return model


def _greeting(address: str, port: int = 18080) -> str:
    with socket.create_connection((address, port), timeout=5) as conn:
        return conn.makefile().readline().strip()


# -- bind and ingress addresses -----------------------------------------------------------------


def test_every_machine_has_distinct_bind_ingress_and_public_addresses(
    models: list[Model], tmp_path: Path
) -> None:
    model = _deploy(models, tmp_path / "m")
    seen: set[str] = set()
    for machine in model.world.machines.values():
        a = model.addresses(machine)
        assert len({a.bind, a.ingress, a.public, a.loopback}) == 4
        assert not seen & {a.bind, a.ingress, a.public}
        seen |= {a.bind, a.ingress, a.public}
    unit = model.world.units["listener/0"]
    a = model.addresses(model.world.machines[unit.machine])
    peers = model.peer_relation("listener")
    assert peers is not None
    # Juju's own keys carry the ingress address (uniter EnterScope), the charm advertised it.
    bag = peers.unit_data["listener/0"]
    assert bag["ingress-address"] == bag["private-address"] == a.ingress
    assert bag["egress-subnets"] == f"{a.ingress}/32"
    assert bag["url"] == f"{a.ingress}:18080"
    assert model.world.units["listener/0"].status == ("active", f"listening on {a.bind}:18080")


def test_a_charm_advertising_its_bind_address_fails(models: list[Model], tmp_path: Path) -> None:
    # Before: bind and ingress were one address, so the mistake could not show.
    model = _deploy(models, tmp_path / "m", advertise="bind")
    unit = model.world.units["listener/0"]
    a = model.addresses(model.world.machines[unit.machine])
    assert unit.error is not None
    assert f"listener/0 advertised its bind address {a.bind}" in unit.error
    assert "key 'url'" in unit.error
    peers = model.peer_relation("listener")
    assert peers is not None
    # The failed hook's data never reached the other units.
    assert a.bind not in json.dumps(peers.unit_data)


def test_a_service_told_to_listen_on_the_ingress_address_fails(
    models: list[Model], tmp_path: Path
) -> None:
    model = _deploy(models, tmp_path / "m", **{"listen-on": "ingress"})
    unit = model.world.units["listener/0"]
    a = model.addresses(model.world.machines[unit.machine])
    assert unit.error is not None
    assert (
        f"service listener listens on the machine's ingress address "
        f"(--listen-address={a.ingress})" in unit.error
    )


def test_a_real_process_listening_on_the_ingress_address_fails(
    models: list[Model], tmp_path: Path
) -> None:
    # No flag to read: the model sees the socket itself.
    model = _deploy(
        models, tmp_path / "m", processes=True, **{"listen-on": "ingress", "flags": "false"}
    )
    unit = model.world.units["listener/0"]
    a = model.addresses(model.world.machines[unit.machine])
    assert unit.error is not None
    assert f"service listener listens on the machine's ingress address {a.ingress}:18080" in (
        unit.error
    )


def test_a_real_service_on_its_bind_address_is_reached_at_its_ingress_address(
    models: list[Model], tmp_path: Path
) -> None:
    model = _deploy(models, tmp_path / "m", processes=True, flags="false")
    for name in ("listener/0", "listener/1"):
        unit = model.world.units[name]
        assert unit.error is None, unit.error
        assert unit.status[0] == "active", unit.status
        a = model.addresses(model.world.machines[unit.machine])
        assert _greeting(a.ingress) == f"hello from {a.bind}"
    stopped = model.destroy()
    assert len(stopped) == 2
    with pytest.raises(ConnectionRefusedError):  # the forwarder went with the machine
        _greeting(a.ingress)


def test_container_scoped_endpoints_bind_on_the_principal_machine(
    model_dir: Path,
) -> None:
    # Before: network-get on a container-scoped endpoint failed (scenario has no binding).
    model = Model.create(model_dir)
    model.deploy(TEST_BUNDLES / "test.yaml")
    for unit in model.world.units.values():
        if unit.principal is None:
            continue
        assert unit.error is None, unit.error
        a = model.addresses(model.world.machines[unit.machine])
        principal = model.world.units[unit.principal]
        assert principal.machine == unit.machine
        bind = (model.unit_root(unit.name) / "etc/sub/bind-address").read_text()
        assert bind == f"{a.bind}\n"


# -- one loopback range per model ---------------------------------------------------------------


def test_each_model_takes_its_own_range_and_destroy_releases_it(
    models: list[Model], tmp_path: Path
) -> None:
    first = _deploy(models, tmp_path / "a")
    second = _deploy(models, tmp_path / "b")
    ranges = {m.world.network["range"] for m in (first, second)}
    assert len(ranges) == 2
    for model in (first, second):
        saved = json.loads((model.directory / "model.json").read_text())
        assert saved["network"] == model.world.network
        assert model.world.network["range"] in format_status(model)
        assert status_data(model)["model"]["range"] == model.world.network["range"]
        prefix = model.world.network["range"].removesuffix("0.0/16")
        assert all(m.address.startswith(prefix) for m in model.world.machines.values())
    block = first.world.network["block"]
    claim = network.registry_dir() / f"127.{block}.json"
    assert claim.exists()
    first.destroy()
    assert not claim.exists()


def test_a_range_with_a_foreign_listener_is_skipped(models: list[Model], tmp_path: Path) -> None:
    probe = Model.create(tmp_path / "probe")
    block = probe.world.network["block"]
    probe.destroy()
    a = network.machine_addresses(block, 0)
    with socket.create_server((a.ingress, 18081)):
        model = Model.create(tmp_path / "m")
        models.append(model)
        assert model.world.network["block"] != block


def test_a_second_model_with_real_services_deploys_while_the_first_runs(
    models: list[Model], tmp_path: Path
) -> None:
    first = _deploy(models, tmp_path / "first", processes=True, flags="false")
    second = _deploy(models, tmp_path / "second", processes=True, flags="false")
    for model in (first, second):
        for unit in model.world.units.values():
            assert unit.error is None, unit.error
            assert unit.status[0] == "active", unit.status
            a = model.addresses(model.world.machines[unit.machine])
            assert _greeting(a.ingress) == f"hello from {a.bind}"


def test_cli_status_shows_the_range(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    directory = tmp_path / "cli"

    def kaji(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kaji.model", *args, "--model-dir", str(directory)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    deployed = kaji("deploy", str(LISTENER), "--no-processes")
    try:
        assert deployed.returncode == 0, deployed.stderr
        data = json.loads(kaji("status", "--format", "json").stdout)
        assert data["model"]["range"].endswith(".0.0/16")
        machine = next(iter(data["machines"].values()))
        assert machine["addresses"]["ingress"] == machine["address"]
        assert machine["addresses"]["bind"] != machine["address"]
    finally:
        kaji("destroy")
    assert not (directory / "model.json").exists()


# -- a service that cannot start says why ------------------------------------------------------


def test_a_service_whose_port_is_held_says_by_whom(models: list[Model], tmp_path: Path) -> None:
    model = Model.create(tmp_path / "m", processes=True)
    models.append(model)
    a = network.machine_addresses(model.world.network["block"], 0)
    with socket.create_server((a.bind, 18080)):
        model.deploy(LISTENER, settle=False)
        model.set_config("listener", {"flags": "false"}, settle=False)
        model.settle()
        unit = model.world.units["listener/0"]
    assert unit.status == (
        "blocked",
        f"listener: cannot listen on {a.bind}:18080: address already in use "
        f"(held by pid {os.getpid()})",
    )


def test_running_out_of_ranges_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(network.REGISTRY_ENV, str(tmp_path / "registry"))
    monkeypatch.setattr(network, "LAST_BLOCK", network.FIRST_BLOCK)
    monkeypatch.setattr(network, "foreign_listeners", lambda block: [])  # others' models
    model = Model.create(tmp_path / "one")
    try:
        with pytest.raises(ModelError, match="no free loopback range"):
            Model.create(tmp_path / "two")
    finally:
        model.destroy()


def test_the_process_manager_names_the_cause_not_a_log_dump(tmp_path: Path) -> None:
    from kaji.host import ProcessManager, ServiceError, ServiceSpec

    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        server = f"import socket; socket.create_server(('127.0.0.1', {port}))"
        manager = ProcessManager(tmp_path / "services", startup_grace=1.0)
        with pytest.raises(ServiceError) as caught:
            manager.ensure(ServiceSpec("busy", [sys.executable, "-c", server]))
    assert str(caught.value) == (
        f"busy: cannot listen on 127.0.0.1:{port}: address already in use "
        f"(held by pid {os.getpid()})"
    )

"""`juju expose`: the API port is opened, and the API certificate names every outside address.

On a machine charm, open-port takes effect when the application is exposed (Juju's open-port
hook command reference); ops' ``Unit.set_ports`` opens the listed ports and closes any other.
"""

from __future__ import annotations

import json
import pathlib

from builders import base_state, unit_data
from ops import testing

from kaji import pki


def _apiserver_identity(root: pathlib.Path) -> pki.Identity:
    return pki.read_certificate((root / "etc/kubernetes/pki/apiserver.crt").read_text()).identity


def test_the_api_port_and_only_it_is_opened(cluster) -> None:
    state = cluster.converge(base_state(opened_ports={testing.TCPPort(8080)}))
    assert state.opened_ports == frozenset({testing.TCPPort(6443)})


def test_invalid_config_opens_nothing(ctx) -> None:
    state = ctx.run(ctx.on.config_changed(), base_state(config={"service-cidr": "nope"}))
    assert state.opened_ports == frozenset()


def test_public_address_is_in_the_certificate_and_the_peer_data(
    cluster, root: pathlib.Path, public_address
) -> None:
    public_address("203.0.113.10")
    state = cluster.converge(base_state())
    assert "203.0.113.10" in _apiserver_identity(root).ip_addresses
    assert json.loads(unit_data(state, "cluster")["public-address"]) == "203.0.113.10"
    assert state.unit_status.name == "active"


def test_a_public_dns_name_is_a_dns_san(cluster, root: pathlib.Path, public_address) -> None:
    public_address("CP-0.Example.COM")
    cluster.converge(base_state())
    assert "cp-0.example.com" in _apiserver_identity(root).dns_names


def test_a_public_address_that_is_neither_ip_nor_name_is_ignored(
    cluster, root: pathlib.Path, public_address, caplog
) -> None:
    public_address("not an address")
    state = cluster.converge(base_state())
    assert "public-address" not in unit_data(state, "cluster")
    assert "ignoring the public address Juju reports" in caplog.text
    assert state.unit_status.name == "active"


def test_loadbalancer_and_extra_sans_are_in_the_certificate(cluster, root: pathlib.Path) -> None:
    options = {"loadbalancer-address": "api.example.com", "extra-sans": "10.9.9.9 k8s.example"}
    cluster.converge(base_state(config=options))
    identity = _apiserver_identity(root)
    assert {"api.example.com", "k8s.example"} <= identity.dns_names
    assert "10.9.9.9" in identity.ip_addresses


def test_a_new_public_address_reissues_the_certificate(
    cluster, root: pathlib.Path, public_address
) -> None:
    public_address("203.0.113.10")
    state = cluster.converge(base_state())
    public_address("203.0.113.99")  # Juju runs config-changed when addresses change
    state = cluster.ctx.run(cluster.ctx.on.config_changed(), state)
    state = cluster.ctx.run(cluster.ctx.on.config_changed(), state)
    identity = _apiserver_identity(root)
    assert "203.0.113.99" in identity.ip_addresses
    assert "203.0.113.10" not in identity.ip_addresses
    assert state.unit_status.name == "active"

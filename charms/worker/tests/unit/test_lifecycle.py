"""Install, status honesty, flags the kubelet knows, and leaving."""

from __future__ import annotations

import pytest
from builders import NODE, joined, kube_control, service
from ops import testing

from kaji import kubernetes, pki
from kaji.host import Host


def test_active_status_names_the_node_and_what_is_only_recorded(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca)
    # The unit-test sandbox records services instead of running them: the status says so.
    assert state.unit_status == testing.ActiveStatus(
        f"node {NODE} (recorded, not running: containerd, kube-proxy, kubelet)"
    )


def test_rendered_flags_exist_in_the_published_version(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    joined(ctx, ca, config={"node-labels": "a=b"})
    for name in ("kubelet", "kube-proxy"):
        record = service(machine, name)
        assert record is not None
        flags = kubernetes.argv_flags(record["spec"].argv)
        assert flags
        assert kubernetes.unknown_flags(name, "1.32.3", flags) == []


def test_invalid_hostname_blocks(
    ctx: testing.Context, machine: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "hostname", "bad_host")
    state = ctx.run(ctx.on.install(), testing.State(relations=[kube_control()]))
    assert state.unit_status == testing.BlockedStatus(
        "hostname 'bad_host' is not a valid Kubernetes node name"
    )
    assert list(machine.root.iterdir()) == []


def test_leaving_stops_services_and_removes_what_was_installed(
    ctx: testing.Context, machine: Host, ca: pki.CertificateAuthority
) -> None:
    state, _ = joined(ctx, ca, units=3)
    assert machine.exists("/etc/kubernetes/pki/node.key")
    state = ctx.run(ctx.on.stop(), state)
    assert state.unit_status == testing.MaintenanceStatus(
        "removing: node services stopped, files removed"
    )
    for name in ("kubelet", "kube-proxy", "kaji-apiserver-lb", "containerd"):
        assert service(machine, name) is None, name
    leftovers = sorted(
        machine.machine_path(p)
        for p in machine.root.rglob("*")
        if p.is_file() and not machine.machine_path(p).startswith("/var/lib/kaji/")
    )
    assert leftovers == []
    # remove follows stop: nothing left to do, nothing fails.
    state = ctx.run(ctx.on.remove(), state)
    assert state.unit_status.name == "maintenance"

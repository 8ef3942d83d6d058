"""The model's proxies (JUJU_CHARM_*): containerd's image pulls and the kubelet download.

Juju exports juju-http-proxy, juju-https-proxy and juju-no-proxy to every hook as
JUJU_CHARM_HTTP_PROXY, JUJU_CHARM_HTTPS_PROXY and JUJU_CHARM_NO_PROXY; ops.testing runs the
charm in this process, so setting them in os.environ is what a hook sees.
"""

from __future__ import annotations

from typing import Any

import pytest
from builders import joined, kube_control, service
from kaji_worker.config import WorkerConfig
from kaji_worker.node import Node
from ops import testing

import kaji.host
from kaji import kubernetes, pki
from kaji.host import Host, ProxySettings

PROXIES = {
    "JUJU_CHARM_HTTP_PROXY": "http://squid.internal:3128",
    "JUJU_CHARM_HTTPS_PROXY": "http://squid.internal:3129",
    "JUJU_CHARM_NO_PROXY": "127.0.0.1,localhost,::1,10.0.0.0/8,.cluster.local",
}
PROXY_ENV = {
    "HTTP_PROXY": "http://squid.internal:3128",
    "HTTPS_PROXY": "http://squid.internal:3129",
    "NO_PROXY": "127.0.0.1,localhost,::1,10.0.0.0/8,.cluster.local",
}


def model_proxies(monkeypatch: pytest.MonkeyPatch, values: dict[str, str] = PROXIES) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def proxy_env(host: Host, name: str) -> dict[str, str]:
    record = service(host, name)
    assert record is not None, name
    return {k: v for k, v in record["spec"].env.items() if k.upper().endswith("_PROXY")}


def test_containerd_pulls_images_through_the_model_proxies(
    ctx: testing.Context,
    machine: Host,
    ca: pki.CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_proxies(monkeypatch)
    state, _ = joined(ctx, ca)
    assert state.unit_status.name == "active"
    assert proxy_env(machine, "containerd") == PROXY_ENV
    # kubelet and kube-proxy talk to the API server and containerd's socket: never proxied.
    assert proxy_env(machine, "kubelet") == {}
    assert proxy_env(machine, "kube-proxy") == {}


def test_without_proxies_containerd_gets_no_proxy_environment(
    ctx: testing.Context,
    machine: Host,
    ca: pki.CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_proxies(
        monkeypatch, {name: "" for name in PROXIES}
    )  # Juju exports them empty when unset
    joined(ctx, ca)
    record = service(machine, "containerd")
    assert record is not None
    assert set(record["spec"].env) == {"PATH"}


def test_a_proxy_change_restarts_containerd_and_nothing_else(
    ctx: testing.Context,
    machine: Host,
    ca: pki.CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Juju passes new proxy settings to the next hook, with no event of their own: the next
    update-status sees them and reconciles."""
    state, _ = joined(ctx, ca)
    before = {name: service(machine, name) for name in ("containerd", "kubelet", "kube-proxy")}
    stats = machine.stats.as_dict()
    ctx.run(ctx.on.update_status(), state)
    assert machine.stats.as_dict() == stats, "no proxy change: update-status changes nothing"
    model_proxies(monkeypatch)
    state = ctx.run(ctx.on.update_status(), state)
    containerd = service(machine, "containerd")
    assert containerd is not None
    assert before["containerd"] is not None
    assert containerd["restarts"] == before["containerd"]["restarts"] + 1
    assert proxy_env(machine, "containerd") == PROXY_ENV
    assert service(machine, "kubelet") == before["kubelet"]
    assert service(machine, "kube-proxy") == before["kube-proxy"]
    stats = machine.stats.as_dict()
    ctx.run(ctx.on.update_status(), state)
    ctx.run(ctx.on.config_changed(), state)
    assert machine.stats.as_dict() == stats, "same proxies again: nothing changes"


@pytest.mark.parametrize(
    ("name", "value", "option"),
    [
        ("JUJU_CHARM_HTTPS_PROXY", "http://squid.internal:99999", "juju-https-proxy"),
        ("JUJU_CHARM_HTTP_PROXY", "socks5://squid.internal:1080", "juju-http-proxy"),
        ("JUJU_CHARM_HTTP_PROXY", "http://squid:3128\nExecStartPre=/bin/sh", "juju-http-proxy"),
        ("JUJU_CHARM_NO_PROXY", "a.example, b example", "juju-no-proxy"),
    ],
)
def test_unusable_proxy_settings_block_naming_the_model_config(
    ctx: testing.Context,
    machine: Host,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    option: str,
) -> None:
    monkeypatch.setenv(name, value)
    relation = kube_control()
    state = ctx.run(ctx.on.config_changed(), testing.State(relations=[relation]))
    assert isinstance(state.unit_status, testing.BlockedStatus)
    assert state.unit_status.message.startswith(f"invalid model config {option} ({name}):")
    assert list(machine.root.iterdir()) == []
    assert state.get_relation(relation.id).local_unit_data == relation.local_unit_data


def test_the_kubelet_download_and_its_checksum_use_the_model_proxies(
    machine: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real machine (not a sandbox) kubelet comes from the release mirror."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def fetch_text(url: str, **kwargs: Any) -> str:
        calls.append((url, kwargs))
        return "a" * 64 + "  kubernetes-node-linux-amd64.tar.gz\n"

    def install_binaries(host: Host, name: str, version: str, **kwargs: Any) -> Any:
        calls.append((kwargs["url"], kwargs))
        raise kaji.host.BinaryInstallError("stop here")

    monkeypatch.setattr(kaji.host, "fetch_text", fetch_text)
    monkeypatch.setattr(kaji.host, "install_binaries", install_binaries)
    monkeypatch.setattr(machine, "is_sandbox", False)
    node = Node(machine, arch="amd64")
    node.proxies = ProxySettings.parse("http://squid:3128", "http://squid:3129", "10.0.0.0/8")
    with pytest.raises(Exception, match="stop here"):
        node.install_kube(kubernetes.check_version("1.32.3"), WorkerConfig(), None)
    url = "https://dl.k8s.io/v1.32.3/kubernetes-node-linux-amd64.tar.gz"
    assert [c[0] for c in calls] == [f"{url}.sha256", url]
    assert all(kwargs["proxies"] is node.proxies for _, kwargs in calls)

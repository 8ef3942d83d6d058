"""Hostile input never crashes a hook (hypothesis).

Hostile values go into every databag key the worker reads (the control-plane leader's
application bag, each control-plane unit's bag, the cni subordinate's bag), every option and
the model's proxy settings, on a settled node. No hook may raise; invalid config or proxy
settings block naming the option and leave the machine as it was; bad relation data makes
the unit wait with a message naming the sender and the key, and is never taken.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import (
    HOSTNAME,
    NODE,
    PROXY_VARIABLES,
    UNIT,
    cni_relation,
    endpoint,
    joined,
    provider_app,
    same_host,
    sign,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kaji_worker.config import WorkerConfig
from ops import testing

from charm import WorkerCharm
from kaji import pki
from kaji.config import ConfigError
from kaji.host import Host, ProxyError, ProxySettings
from kaji.interfaces import RelationDataError
from kaji.interfaces.cni import read_cni_unit
from kaji.interfaces.kube_control import (
    KubeControlRequirerUnit,
    read_provider_app,
    read_provider_unit,
)
from kaji.testing import sandbox_machine_at

CHARM_ROOT = Path(__file__).parents[2]
OPTIONS = sorted(yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())["config"]["options"])
APP_KEYS = [
    "ca-cert",
    "certificates",
    "service-cidr",
    "dns-address",
    "dns-domain",
    "kubernetes-version",
    "image-registry",
]
CNI_KEYS = ["cluster-cidr", "cni-conf-path", "pod-subnet"]
EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclasses.dataclass(frozen=True)
class Settled:
    """A node that joined three control planes and a cni, and a copy of its machine."""

    root: Path
    template: Path
    state: testing.State
    cert: str
    ca: pki.CertificateAuthority

    def restore(self, monkeypatch: pytest.MonkeyPatch) -> Host:
        """The settled machine again, at the same path (rendered files hold it)."""
        shutil.rmtree(self.root)
        shutil.copytree(self.template, self.root, symlinks=True)
        return sandbox(self.root, monkeypatch)


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory, ca: pki.CertificateAuthority) -> Settled:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "machine"
    with pytest.MonkeyPatch.context() as monkeypatch:
        sandbox(root, monkeypatch)
        context = testing.Context(WorkerCharm, app_name="worker", unit_id=0)
        state, cert = joined(context, ca, units=3)
    assert state.unit_status.name == "active", state.unit_status
    shutil.copytree(root, base / "template", symlinks=True)
    return Settled(root, base / "template", state, cert, ca)


def sandbox(root: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    """``root`` as the unit's machine (kaji.testing), one Host for every hook."""
    sandbox_machine_at(root, monkeypatch, hostname=HOSTNAME)
    return same_host(monkeypatch)


def snapshot(host: Host) -> dict[str, tuple[int, bytes]]:
    return {
        host.machine_path(p): (p.stat().st_mode, p.read_bytes())
        for p in sorted(host.root.rglob("*"))
        if p.is_file()
    }


# --- hostile values ---------------------------------------------------------------------------

_OTHER_CA = pki.create_ca("another-cluster")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
PLAUSIBLE = [
    "",
    " ",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "fd00::/112",
    "10.152.183.0/33",
    "10.152.183.300",
    "10.152.183.10",
    "fd00::10",
    "255.255.255.255",
    "127.0.0.1",
    "https://evil.example:6443",
    "http://10.0.0.1:6443",
    "https://user:pass@10.0.0.1:6443",
    "https://10.0.0.1:99999",
    "https://10.0.0.1:6443/path?q=1#f",
    "https://[fd00::1]:6443",
    "/etc/cni/net.d/../../../../tmp",
    "relative/cni",
    "/etc/cni/net.d\nExecStart=/bin/sh",
    "/",
    "/" + "a" * 5000,
    "Registry.example.com",
    "registry.k8s.io/../../x",
    "registry.example.com:0",
    "1.99.0",
    "1.20.0",
    "1.32.3",
    "01.32.3",
    "cluster.local",
    "-bad-.local",
    "a" * 300,
    "\x00",
    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    _OTHER_CA.cert_pem,
    "not a pem",
]


def hostile_value(extra: list[Any] | None = None) -> st.SearchStrategy[str]:
    """A raw databag value: not JSON, JSON of any shape, or a plausible but wrong string."""
    return st.one_of(
        st.text(max_size=120),
        _JSON.map(json.dumps),
        st.sampled_from([*PLAUSIBLE, *(extra or [])]).map(json.dumps),
        st.sampled_from(['"' + "x" * 70000 + '"', "[" * 3000 + "]" * 3000, "NaN", "1e999"]),
    )


def hostile_bag(valid: Mapping[str, str], keys: list[str], extra: list[Any]) -> st.SearchStrategy:
    """``valid`` with some keys replaced, some removed and maybe an unknown one added."""
    changes = st.dictionaries(
        st.sampled_from([*keys, "unknown-key"]), hostile_value(extra), min_size=1, max_size=3
    )
    removed = st.sets(st.sampled_from(keys), max_size=2)
    return st.tuples(changes, removed).map(
        lambda cr: {k: v for k, v in {**valid, **cr[0]}.items() if k not in cr[1]}
    )


def read_error(reader: Any, bag: Mapping[str, str]) -> RelationDataError | None:
    try:
        reader(bag)
    except RelationDataError as exc:
        return exc
    return None


def named(sender: str, error: RelationDataError) -> str:
    if error.key == "*":
        return f"{sender} sent a bad databag"
    return f"{sender} sent a bad {error.key[:60]!r}"


@st.composite
def hostile_relations(draw: st.DrawFn, settled: Settled) -> dict[str, Any]:
    ca, cert = settled.ca, settled.cert
    valid_app = provider_app(ca, {UNIT: cert})
    certificates = [
        {UNIT: _OTHER_CA.cert_pem},
        {UNIT: sign(pki.create_csr(pki.generate_private_key(), pki.Identity.of("x")), ca)},
        {UNIT: 5},
        {"../../etc": cert},
        {UNIT: cert, **{f"worker/{i}": "junk" for i in range(1, 50)}},
        [cert],
    ]

    # Each bag is hostile in about a third of the examples, so later stages are reached too.
    def maybe(valid: dict[str, str], keys: list[str], extra: list[Any]) -> dict[str, str]:
        if draw(st.sampled_from([False, False, True])):
            return draw(hostile_bag(valid, keys, extra))
        return valid

    app = maybe(valid_app, APP_KEYS, certificates)
    units = {
        i: maybe({"api-endpoint": json.dumps(endpoint(i + 1))}, ["api-endpoint"], [])
        for i in range(3)
    }
    cni = maybe(dict(cni_relation().remote_unit_data), CNI_KEYS, [])
    event = draw(st.sampled_from(["kube-control", "cni", "config"]))
    return {"app": app, "units": units, "cni": cni, "event": event}


# --- the tests --------------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
def test_hostile_relation_data_never_crashes_and_is_named(
    settled: Settled, data: st.DataObject
) -> None:
    drawn = data.draw(hostile_relations(settled))
    before = {r.endpoint: r for r in settled.state.relations}
    kc = dataclasses.replace(
        before["kube-control"], remote_app_data=drawn["app"], remote_units_data=drawn["units"]
    )
    cni = dataclasses.replace(before["cni"], remote_unit_data=drawn["cni"])
    state = dataclasses.replace(settled.state, relations=[kc, cni])
    context = testing.Context(WorkerCharm, app_name="worker", unit_id=0)
    hook = {
        "kube-control": context.on.relation_changed(kc, remote_unit=0),
        "cni": context.on.relation_changed(cni),
        "config": context.on.config_changed(),
    }[drawn["event"]]
    with pytest.MonkeyPatch.context() as monkeypatch:
        settled.restore(monkeypatch)
        after = context.run(hook, state)  # an uncaught exception fails the example

    status = after.unit_status
    assert status.name in ("active", "waiting", "blocked"), status
    mine = after.get_relation(kc.id).local_unit_data
    assert KubeControlRequirerUnit.from_databag(mine).node_name == NODE
    for relation in after.relations:
        assert "PRIVATE KEY" not in json.dumps(dict(relation.local_unit_data))

    event(f"status {status.name}: {status.message.split(':')[0][:40]}")
    app_error = read_error(read_provider_app, drawn["app"])
    if app_error is not None:
        assert status == testing.WaitingStatus(status.message), status
        assert named("control-plane", app_error) in status.message
        return
    control_plane = read_provider_app(drawn["app"])
    assert control_plane is not None
    if status.name == "blocked":  # only the published version may block
        assert status.message.startswith("unusable 'kubernetes-version' from control-plane:")
        return
    unit_errors = {
        i: read_error(read_provider_unit, bag) for i, bag in sorted(drawn["units"].items())
    }
    if all(
        e is not None or not read_provider_unit(b)
        for e, b in zip(unit_errors.values(), drawn["units"].values(), strict=True)
    ):
        assert status.name == "waiting"
        for i, error in unit_errors.items():
            if error is not None:
                assert named(f"control-plane/{i}", error) in status.message
        return
    cni_error = read_error(read_cni_unit, drawn["cni"])
    if cni_error is not None:
        assert status.name == "waiting", "bad CNI data is never taken"
        if status.message.startswith(f"node {NODE}: "):
            assert named("cni/0", cni_error) in status.message


OPTION_VALUES = {
    "node-labels": ["a=b", "kubernetes.io/x=y", "a=b a=b", "=x", "a/b/c=d", "a=" + "x" * 64],
    "node-taints": [
        "k:NoSchedule",
        "k=v:Bad",
        ":NoSchedule",
        "k=v=w:NoExecute",
        "k:NoSchedule " * 2,
    ],
    "proxy-mode": ["nftables", "IPVS", " ipvs ", "", "iptables\n"],
    "registry-mirrors": [
        "docker.io=https://m.example",
        "docker.io=https://u:p@m.example",
        "Docker.io=https://m.example",
        "x.example=https://m.example,ftp://y.example",
        "docker.io=https://m.example:0",
        "_default=http://[::1]:5000",
        "docker.io=https://m.example/\nserver",
        "../../etc=https://m.example",
    ],
    "kubelet-extra-config": [
        "maxPods: 10",
        "clusterDNS: [1.1.1.1]",
        "[1]",
        "a: &a [*a]",
        "x: !!binary aGVsbG8=",
        "x: !!python/object:os.system {}",
        "when: 2024-01-01",
        "[" * 5000,
        "a: &a [1,2]\nb: &b [*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b]\nd: [*c,*c,*c,*c]",
        "{1: 2}",
        "evictionHard: {memory.available: .nan}",
    ],
    "proxy-extra-config": ["ipvs: {scheduler: lc}", "mode: ipvs", "[" * 5000, "a: &a {b: *a}"],
    "loadbalancer-address": [
        "lb.example",
        "https://lb.example:0",
        "https://u:p@lb.example",
        "::1",
        "[::1]",
        "https://[::1]:6443",
        "lb.example:99999",
        "https://lb.example/x",
        "http://lb.example",
        "-lb-",
        "lb..example",
        "LB.example",
    ],
    "release-mirror": ["file:///", "https://m.example/x?y", "https://m.example:0", "http://[::1]"],
    "kubernetes-node-sha256": ["A" * 64, "g" * 64, "a" * 63, " " + "a" * 64],
}
PROXY_VALUES = [
    "",
    "http://squid.example:3128",
    "squid.example:3128",
    "https://squid.example:3128",
    "http://squid.example:99999",
    "http://u:p@squid.example:3128",
    "http://squid.example:3128\nExecStart=/bin/sh",
    "127.0.0.1,localhost,::1,10.0.0.0/8",
    "a b",
]


@st.composite
def hostile_config(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str]]:
    names = draw(st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=3, unique=True))
    config = {
        name: draw(st.one_of(st.text(max_size=200), st.sampled_from(OPTION_VALUES[name])))
        for name in names
    }
    proxies = draw(
        st.dictionaries(
            st.sampled_from(PROXY_VARIABLES),
            st.one_of(  # an environment value holds anything but NUL
                st.sampled_from(PROXY_VALUES),
                st.text(st.characters(blacklist_characters="\x00"), max_size=60),
            ),
            max_size=2,
        )
    )
    return config, proxies


def test_every_option_has_hostile_values() -> None:
    assert sorted(OPTION_VALUES) == OPTIONS


@EXAMPLES
@given(drawn=hostile_config())
def test_hostile_config_never_crashes_and_invalid_values_change_nothing(
    settled: Settled, drawn: tuple[dict[str, str], dict[str, str]]
) -> None:
    config, proxies = drawn
    state = dataclasses.replace(settled.state, config={**settled.state.config, **config})
    context = testing.Context(WorkerCharm, app_name="worker", unit_id=0)
    with pytest.MonkeyPatch.context() as monkeypatch:
        host = settled.restore(monkeypatch)
        for name, value in proxies.items():
            monkeypatch.setenv(name, value)
        files = snapshot(host)
        after = context.run(context.on.config_changed(), state)  # never raises
        unchanged = snapshot(host) == files

    expected: str | None = None
    try:
        WorkerConfig.from_options(dict(state.config))
    except ConfigError as exc:
        expected = f"invalid config {exc}"
    if expected is None:
        try:
            ProxySettings.parse(*(proxies.get(name, "") for name in PROXY_VARIABLES))
        except ProxyError as exc:
            expected = str(exc)
    status = after.unit_status
    event(f"status {status.name}: {status.message[:30]}")
    if expected is not None:
        assert status == testing.BlockedStatus(expected)
        assert unchanged, "invalid config changes nothing on the machine"
        for relation in settled.state.relations:
            assert after.get_relation(relation.id).local_unit_data == relation.local_unit_data
    else:
        assert status.name in ("active", "waiting", "blocked"), status
        if status.message.startswith("invalid config"):
            assert unchanged

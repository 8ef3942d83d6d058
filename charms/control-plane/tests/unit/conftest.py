"""Fixtures for the control-plane unit tests: a sandboxed host and relation builders."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from ops import testing

from charm import ControlPlaneCharm
from kaji import pki
from kaji.host import Host
from kaji.interfaces import etcd as etcd_if
from kaji.interfaces import kube_control as kc

CHARM_ROOT = pathlib.Path(__file__).parents[2]
ETCD_URLS = ["https://10.0.0.11:2379", "https://10.0.0.12:2379"]


@pytest.fixture
def root(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """The unit's sandbox root (KAJI_HOST_ROOT); services are recorded, never run."""
    path = tmp_path / "machine"
    path.mkdir()
    monkeypatch.setenv("KAJI_HOST_ROOT", str(path))
    monkeypatch.setenv("KAJI_HOST_HOSTNAME", "cp-0")
    monkeypatch.delenv("KAJI_HOST_PROCESSES", raising=False)
    return path


@pytest.fixture
def host(root: pathlib.Path) -> Host:
    return Host(root)


@pytest.fixture
def ctx(root: pathlib.Path) -> testing.Context[ControlPlaneCharm]:
    return testing.Context(ControlPlaneCharm, charm_root=CHARM_ROOT, app_name="control-plane")


@dataclasses.dataclass
class EtcdSide:
    """A fake etcd application: its CA and what it signs."""

    ca: pki.CertificateAuthority
    issued: dict[str, str] = dataclasses.field(default_factory=dict)

    def provider_bag(self, unit_bags: dict[str, dict[str, str]]) -> dict[str, str]:
        certs = {}
        for unit, bag in unit_bags.items():
            data = etcd_if.read_requirer_unit(bag, unit)
            if data is not None:
                if data.client_csr not in self.issued:
                    self.issued[data.client_csr] = pki.sign_csr(
                        data.client_csr, self.ca, pki.Profile.CLIENT
                    )
                certs[unit] = self.issued[data.client_csr]
        return etcd_if.EtcdProviderApp(
            client_urls=tuple(ETCD_URLS), ca_cert=self.ca.cert_pem, certificates=certs
        ).to_databag()


@pytest.fixture(scope="session")
def etcd_side() -> EtcdSide:
    return EtcdSide(pki.create_ca("etcd-ca"))


def worker_bag(
    node_name: str, addresses: list[str], *, csr_identity: pki.Identity | None = None
) -> dict[str, str]:
    """A worker unit's kube-control databag; Juju's ingress-address is the first address."""
    key = pki.generate_private_key()
    identity = csr_identity or kc.expected_node_identity(node_name, addresses)
    csr = pki.create_csr(key, identity)
    bag = {
        "node-name": f'"{node_name}"',
        "addresses": "[" + ",".join(f'"{a}"' for a in sorted(addresses)) + "]",
        "kubelet-csr": __import__("json").dumps(csr),
        "ingress-address": addresses[0],
    }
    return bag


def cni_bag(cluster_cidr: str = "10.1.0.0/16", pod_subnet: str = "10.1.0.0/24") -> dict[str, str]:
    from kaji.interfaces import cni

    return cni.CniUnit(
        cluster_cidr=cluster_cidr, cni_conf_path="/etc/cni/net.d", pod_subnet=pod_subnet
    ).to_databag()


def unit_data(state: testing.State, endpoint: str) -> dict[str, str]:
    return dict(state.get_relations(endpoint)[0].local_unit_data)


def app_data(state: testing.State, endpoint: str) -> dict[str, str]:
    return dict(state.get_relations(endpoint)[0].local_app_data)


def with_relation(state: testing.State, relation: Any) -> testing.State:
    others = [r for r in state.relations if r.endpoint != relation.endpoint]
    return dataclasses.replace(state, relations={*others, relation})


@dataclasses.dataclass
class Cluster:
    """Drive a single leader unit to active: etcd, cni and peer relations wired."""

    ctx: testing.Context[ControlPlaneCharm]
    etcd: EtcdSide

    def converge(self, state: testing.State, rounds: int = 3) -> testing.State:
        for _ in range(rounds):
            state = self.ctx.run(self.ctx.on.update_status(), state)
            etcd_rel = state.get_relations("etcd")
            if etcd_rel:
                rel = etcd_rel[0]
                bags = {f"{self.ctx.app_name}/{self.ctx.unit_id}": dict(rel.local_unit_data)}
                new = dataclasses.replace(rel, remote_app_data=self.etcd.provider_bag(bags))
                state = with_relation(state, new)
        return self.ctx.run(self.ctx.on.update_status(), state)


@pytest.fixture
def cluster(ctx: testing.Context[ControlPlaneCharm], etcd_side: EtcdSide) -> Iterator[Cluster]:
    return Cluster(ctx, etcd_side)


def base_state(leader: bool = True, **kwargs: Any) -> testing.State:
    """etcd, cni and peer relations, no data from the other side yet."""
    relations = {
        testing.Relation("etcd", remote_app_name="etcd"),
        testing.SubordinateRelation("cni", remote_app_name="cni", remote_unit_data=cni_bag()),
        testing.PeerRelation("cluster"),
    }
    extra = list(kwargs.pop("relations", ()))
    replaced = {r.endpoint for r in extra}
    relations = {r for r in relations if r.endpoint not in replaced} | set(extra)
    return testing.State(leader=leader, relations=relations, **kwargs)


def default_options() -> dict[str, Any]:
    import yaml

    meta = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    return {k: v["default"] for k, v in meta["config"]["options"].items()}


def peer_bag(
    directory: pathlib.Path, hostname: str, addresses: list[str], **options: Any
) -> tuple[dict[str, str], Host]:
    """Another control-plane unit's peer databag (keys made in its own sandbox)."""
    import control_plane as cp

    from kaji.interfaces import control_plane_peers as peers

    other = Host(directory)
    settings = cp.parse_settings({**default_options(), **options})
    requests = cp.ensure_requests(other, hostname, addresses, settings)
    data = peers.ControlPlanePeerUnit(
        hostname=hostname,
        addresses=tuple(addresses),
        csrs={p: r.csr_pem for p, r in requests.items()},
    )
    return {**data.to_databag(), "ingress-address": addresses[0]}, other


def files_under(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def service_argv(root: pathlib.Path, name: str) -> list[str]:
    from kaji.host import RecordingManager

    spec = RecordingManager(root / "var/lib/kaji/services").get(name)
    assert spec is not None, f"{name} is not set up"
    return list(spec.argv)


def flags_of(argv: list[str]) -> dict[str, str]:
    out = {}
    for item in argv[1:]:
        name, _, value = item[2:].partition("=")
        out[name] = value
    return out

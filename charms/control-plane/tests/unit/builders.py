"""Shared test builders: states, relations, peer and worker data, fake etcd and kubectl."""

from __future__ import annotations

import atexit
import dataclasses
import json
import pathlib
import shutil
import tempfile
from typing import Any

import pytest
import yaml
from kaji_control_plane.config import ControlPlaneConfig
from kaji_control_plane.pki import ensure_requests
from ops import testing
from scenario import _runtime

from charm import ControlPlaneCharm
from kaji import pki
from kaji.host import Host, RecordingManager
from kaji.interfaces import cni
from kaji.interfaces import control_plane_peers as peers
from kaji.interfaces import etcd as etcd_if
from kaji.interfaces import kube_control as kc

CHARM_ROOT = pathlib.Path(__file__).parents[2]
#: The unit's hostname in every test (its node name too).
HOSTNAME = "cp-0"


def _private_charm_root() -> pathlib.Path:
    """A copy of charmcraft.yaml alone, as every Context's charm_root.

    ops.testing writes metadata.yaml, config.yaml and actions.yaml into a Context's charm_root
    for each run and puts back what was there after it: two test processes sharing the charm
    directory read each other's half-written files (KeyError on an endpoint, a missing action)
    and can leave them behind, where they would shadow charmcraft.yaml. The charm reads nothing
    else from its charm directory (its templates are found from src/).
    """
    root = pathlib.Path(tempfile.mkdtemp(prefix="kaji-control-plane-root-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copy2(CHARM_ROOT / "charmcraft.yaml", root / "charmcraft.yaml")
    return root


#: The charm_root of every ops.testing Context in these tests (see _private_charm_root).
CONTEXT_ROOT = _private_charm_root()
ETCD_URLS = ["https://10.0.0.11:2379", "https://10.0.0.12:2379"]


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
        "kubelet-csr": json.dumps(csr),
        "ingress-address": addresses[0],
    }
    return bag


def cni_bag(cluster_cidr: str = "10.1.0.0/16", pod_subnet: str = "10.1.0.0/24") -> dict[str, str]:
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
    meta = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    return {k: v["default"] for k, v in meta["config"]["options"].items()}


def peer_bag(
    directory: pathlib.Path, hostname: str, addresses: list[str], **options: Any
) -> tuple[dict[str, str], Host]:
    """Another control-plane unit's peer databag (keys made in its own sandbox)."""
    other = Host(directory)
    settings = ControlPlaneConfig.from_options({**default_options(), **options})
    requests = ensure_requests(other, hostname, addresses, settings)
    data = peers.ControlPlanePeerUnit(
        hostname=hostname,
        addresses=tuple(addresses),
        csrs={p: r.csr_pem for p, r in requests.items()},
    )
    return {**data.to_databag(), "ingress-address": addresses[0]}, other


def files_under(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def service_argv(root: pathlib.Path, name: str) -> list[str]:
    spec = RecordingManager(root / "var/lib/kaji/services").get(name)
    assert spec is not None, f"{name} is not set up"
    return list(spec.argv)


def flags_of(argv: list[str]) -> dict[str, str]:
    out = {}
    for item in argv[1:]:
        name, _, value = item[2:].partition("=")
        out[name] = value
    return out


# ----------------------------------------------------------------------------- machine snapshots


def snapshot(root: pathlib.Path, *, skip: tuple[str, ...] = ()) -> dict[str, tuple[bytes, int]]:
    """Every file under the sandbox root: content and mode (paths under ``skip`` left out)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and not rel.startswith(skip):
            found[rel] = (path.read_bytes(), path.stat().st_mode)
    return found


def databags(state: testing.State) -> dict[str, Any]:
    """Every relation databag of a state, by endpoint and side."""
    bags: dict[str, Any] = {}
    for rel in state.relations:
        bags[f"{rel.endpoint}:{rel.id}"] = {
            "local-app": dict(rel.local_app_data),
            "local-unit": dict(rel.local_unit_data),
        }
    return bags


def secrets_of(state: testing.State) -> list[tuple[Any, ...]]:
    """What a state's secrets hold: label, owner, every revision's content."""
    return sorted(
        (s.label or "", s.owner or "", repr(s.tracked_content), repr(s.latest_content))
        for s in state.secrets
    )


# ----------------------------------------------------------------------------- fake tools


@dataclasses.dataclass
class FakeKubectl:
    """A kubectl at the path the charm runs it from; it logs its calls and can refuse."""

    path: pathlib.Path
    log: pathlib.Path
    mode: pathlib.Path

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def api(self, up: bool) -> None:
        self.mode.write_text("up" if up else "down")


REFUSED = (
    "The connection to the server 192.0.2.0:6443 was refused"
    " - did you specify the right host or port?"
)
_FAKE_KUBECTL = """#!/bin/sh
echo "$*" >> "{log}"
if [ "$(cat "{mode}")" = down ]; then
  echo "{refused}" >&2
  exit 1
fi
exit 0
"""


def depart_as(monkeypatch: pytest.MonkeyPatch, unit_name: str) -> None:
    """Make relation-departed name ``unit_name`` as the departing unit (JUJU_DEPARTING_UNIT).

    ops.testing names the departing unit after the remote application, so it cannot say
    "this unit is the one leaving" on a non-peer relation, which Juju does for every relation
    of a unit being removed.
    """
    original = _runtime.Runtime._get_event_env

    def env(self: Any, state: Any, event: Any, charm_root: Any) -> dict[str, str]:
        found = original(self, state, event, charm_root)
        if "JUJU_DEPARTING_UNIT" in found:
            found["JUJU_DEPARTING_UNIT"] = unit_name
        return found

    monkeypatch.setattr(_runtime.Runtime, "_get_event_env", env)

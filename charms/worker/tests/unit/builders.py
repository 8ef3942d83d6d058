"""Shared test builders: the worker's sandboxed machine, relations, CSRs and certificates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from ops import testing

import kaji.host
from charm import WorkerCharm
from kaji import pki
from kaji.host import Host
from kaji.interfaces.cni import CniUnit
from kaji.interfaces.kube_control import KubeControlProviderApp, KubeControlProviderUnit

UNIT = "worker/0"
NODE = "worker-0"
ADDRESS = "192.0.2.0"  # ops.testing's default ingress address
#: The machine's hostname (the node name is its lower-case form, NODE).
HOSTNAME = "Worker-0"
#: How Juju hands the model's juju-http-proxy, juju-https-proxy, juju-no-proxy to every hook.
PROXY_VARIABLES = ("JUJU_CHARM_HTTP_PROXY", "JUJU_CHARM_HTTPS_PROXY", "JUJU_CHARM_NO_PROXY")


def same_host(monkeypatch: pytest.MonkeyPatch) -> Host:
    """The sandboxed machine as one Host: every hook of a test then sees it (and its stats)."""
    host = kaji.host.host_from_environment()
    monkeypatch.setattr(kaji.host, "host_from_environment", lambda *a, **k: host)
    return host


def provider_app(
    ca: pki.CertificateAuthority, certificates: Mapping[str, str] | None = None, **overrides: Any
) -> dict[str, str]:
    """The control-plane leader's databag."""
    values: dict[str, Any] = {
        "ca_cert": ca.cert_pem,
        "service_cidr": "10.152.183.0/24",
        "dns_address": "10.152.183.10",
        "dns_domain": "cluster.local",
        "kubernetes_version": "1.32.3",
        "image_registry": "registry.k8s.io",
        "certificates": dict(certificates or {}),
    }
    values.update(overrides)
    return KubeControlProviderApp(**values).to_databag()


def endpoint(n: int) -> str:
    return f"https://10.0.0.{n}:6443"


def kube_control(
    app_data: Mapping[str, str] | None = None, units: int = 1, relation_id: int = 7
) -> testing.Relation:
    """The kube-control relation with ``units`` control-plane units, each its own endpoint."""
    return testing.Relation(
        "kube-control",
        "kaji-kube-control",
        id=relation_id,
        remote_app_name="control-plane",
        remote_app_data=dict(app_data or {}),
        remote_units_data={
            i: KubeControlProviderUnit(endpoint(i + 1)).to_databag() for i in range(units)
        },
    )


def cni_relation(ready: bool = True, conf_path: str = "/etc/cni/net.d") -> testing.Relation:
    data = CniUnit("10.1.0.0/16", conf_path, "10.1.3.0/24").to_databag() if ready else {}
    return testing.SubordinateRelation(
        "cni", "kaji-cni", id=9, remote_app_name="cni", remote_unit_data=data
    )


def published_csr(state: testing.State, relation_id: int = 7) -> str:
    """The CSR the unit published on kube-control."""
    return json.loads(state.get_relation(relation_id).local_unit_data["kubelet-csr"])


def sign(csr: str, ca: pki.CertificateAuthority, **kwargs: Any) -> str:
    return pki.sign_csr(csr, ca, pki.Profile.PEER, **kwargs)


def joined(
    ctx: testing.Context[WorkerCharm],
    ca: pki.CertificateAuthority,
    units: int = 1,
    cni: bool = True,
    config: Mapping[str, str] | None = None,
    resources: frozenset[testing.Resource] | set[testing.Resource] = frozenset(),
) -> tuple[testing.State, str]:
    """Run until the node has its certificate: first hook publishes the CSR, the second
    receives the signed certificate. Returns the final state and the certificate."""
    relations: list[testing.RelationBase] = [kube_control(provider_app(ca), units)]
    if cni:
        relations.append(cni_relation())
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(relations=relations, config=config or {}, resources=resources),
    )
    cert = sign(published_csr(state), ca)
    rel = kube_control(provider_app(ca, {UNIT: cert}), units)
    others = [r for r in state.relations if r.endpoint != "kube-control"]
    state = ctx.run(
        ctx.on.relation_changed(rel, remote_unit=0),
        testing.State(relations=[rel, *others], config=config or {}, resources=resources),
    )
    return state, cert


def service(host: Host, name: str) -> dict[str, Any] | None:
    """A service's spec and record, from whichever manager holds it (real or recorded)."""
    from kaji.host import RecordingManager

    for manager in (
        host.services,
        RecordingManager(host.path("/var/lib/kaji/worker/recorded-services")),
    ):
        spec = manager.get(name)
        if spec is not None:
            record = manager.record(name) if hasattr(manager, "record") else {}
            return {"spec": spec, **record}
    return None


def text(host: Host, path: str) -> str:
    content = host.read_text(path)
    assert content is not None, f"{path} was not written"
    return content

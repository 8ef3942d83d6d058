"""kube-control: every unit's endpoint, the cluster facts, node CSRs signed only when right."""

from __future__ import annotations

import json

import pytest
from builders import base_state, with_relation, worker_bag
from ops import testing

from kaji import pki
from kaji.interfaces import kube_control as kc


def _run(cluster, workers: dict[int, dict[str, str]], **state_kwargs):
    relation = testing.Relation(
        "kube-control", remote_app_name="worker", remote_units_data=workers
    )
    state = cluster.converge(base_state(relations=[relation], **state_kwargs))
    rel = state.get_relations("kube-control")[0]
    return state, rel, kc.read_provider_app(rel.local_app_data)


def test_publishes_own_endpoint_and_the_cluster_facts(cluster) -> None:
    state, rel, app = _run(cluster, {})
    assert kc.read_provider_unit(rel.local_unit_data) == kc.KubeControlProviderUnit(
        "https://192.0.2.0:6443"
    )
    assert app is not None
    assert (app.service_cidr, app.dns_address, app.dns_domain) == (
        "10.152.183.0/24",
        "10.152.183.10",
        "cluster.local",
    )
    assert (app.kubernetes_version, app.image_registry) == ("1.32.3", "registry.k8s.io")
    secret = next(s for s in state.secrets if s.label == "cluster-ca")
    assert app.ca_cert == secret.tracked_content["cert"]


def test_signs_a_matching_node_csr(cluster) -> None:
    _, _, app = _run(cluster, {0: worker_bag("worker-0", ["10.0.1.5"])})
    assert app is not None
    cert = app.certificate_for("worker/0")
    assert cert is not None
    info = pki.read_certificate(cert)
    assert info.identity == kc.expected_node_identity("worker-0", ["10.0.1.5"])
    pki.verify_chain(cert, app.ca_cert, pki.Profile.PEER)


@pytest.mark.parametrize(
    "identity",
    [
        pki.Identity.of("system:node:worker-1", ["system:nodes"], ["worker-1"], ["10.0.1.5"]),
        pki.Identity.of("system:node:worker-0", ["system:masters"], ["worker-0"], ["10.0.1.5"]),
        pki.Identity.of("system:node:worker-0", ["system:nodes"], ["worker-0"], ["10.0.1.99"]),
        pki.Identity.of("admin", ["system:nodes"], ["worker-0"], ["10.0.1.5"]),
    ],
    ids=["other-node-cn", "wrong-org", "other-address", "not-a-node"],
)
def test_refuses_a_mismatched_node_csr(cluster, caplog, identity: pki.Identity) -> None:
    bag = worker_bag("worker-0", ["10.0.1.5"], csr_identity=identity)
    _, _, app = _run(cluster, {0: bag, 1: worker_bag("worker-1", ["10.0.1.6"])})
    assert app is not None
    assert app.certificate_for("worker/0") is None
    assert app.certificate_for("worker/1") is not None  # one bad worker hides no other
    assert "refusing node certificate for worker/0" in caplog.text


def test_refuses_addresses_juju_does_not_report(cluster, caplog) -> None:
    bag = worker_bag("worker-0", ["10.0.1.5", "10.0.9.9"])  # Juju says only 10.0.1.5
    _, _, app = _run(cluster, {0: bag})
    assert app is not None
    assert app.certificate_for("worker/0") is None
    assert "not addresses of this unit" in caplog.text


def test_duplicate_node_name_is_refused(cluster, caplog) -> None:
    _, _, app = _run(
        cluster,
        {0: worker_bag("node-a", ["10.0.1.5"]), 3: worker_bag("node-a", ["10.0.1.8"])},
    )
    assert app is not None
    assert set(app.certificates) == {"worker/0"}
    assert "node name 'node-a' is already used by worker/0" in caplog.text


@pytest.mark.parametrize("name", ["kubernetes", "kubernetes.default.svc.cluster.local"])
def test_node_name_of_the_api_server_is_refused(cluster, caplog, name: str) -> None:
    # A node cert carries its name as a DNS SAN with server auth: it must not pose as the API.
    _, _, app = _run(cluster, {0: worker_bag(name, ["10.0.1.5"])})
    assert app is not None
    assert app.certificate_for("worker/0") is None
    assert f"node name {name!r} is reserved for the API server" in caplog.text


def test_duplicate_keeps_the_unit_already_certified(cluster) -> None:
    state, rel, app = _run(cluster, {5: worker_bag("node-a", ["10.0.1.5"])})
    assert app is not None
    assert set(app.certificates) == {"worker/5"}
    new = testing.Relation(
        "kube-control",
        id=rel.id,
        remote_app_name="worker",
        local_app_data=rel.local_app_data,
        remote_units_data={
            5: dict(rel.remote_units_data[5]),
            1: worker_bag("node-a", ["10.0.1.8"]),
        },
    )
    state = cluster.ctx.run(
        cluster.ctx.on.relation_changed(new, remote_unit=1),
        with_relation(state, new),
    )
    app2 = kc.read_provider_app(state.get_relations("kube-control")[0].local_app_data)
    assert app2 is not None
    assert set(app2.certificates) == {"worker/5"}
    assert app2.certificates["worker/5"] == app.certificates["worker/5"]


def test_departed_worker_loses_its_certificate(cluster) -> None:
    state, rel, app = _run(
        cluster, {0: worker_bag("w0", ["10.0.1.5"]), 1: worker_bag("w1", ["10.0.1.6"])}
    )
    assert app is not None
    assert set(app.certificates) == {"worker/0", "worker/1"}
    remaining = testing.Relation(
        "kube-control",
        id=rel.id,
        remote_app_name="worker",
        local_app_data=rel.local_app_data,
        remote_units_data={0: dict(rel.remote_units_data[0])},
    )
    state = cluster.ctx.run(
        cluster.ctx.on.relation_departed(remaining, remote_unit=1, departing_unit=1),
        with_relation(state, remaining),
    )
    app2 = kc.read_provider_app(state.get_relations("kube-control")[0].local_app_data)
    assert app2 is not None
    assert set(app2.certificates) == {"worker/0"}
    assert app2.certificates["worker/0"] == app.certificates["worker/0"]


def test_non_leader_publishes_only_its_endpoint(ctx) -> None:
    relation = testing.Relation(
        "kube-control",
        remote_app_name="worker",
        remote_units_data={0: worker_bag("w0", ["10.0.1.5"])},
    )
    state = ctx.run(ctx.on.update_status(), base_state(leader=False, relations=[relation]))
    rel = state.get_relations("kube-control")[0]
    assert dict(rel.local_app_data) == {}
    # Not signed yet, but the unit does not touch kube-control app data.
    assert state.unit_status.name == "waiting"


def test_settings_flow_to_workers(cluster) -> None:
    options = {
        "service-cidr": "10.96.0.0/16",
        "cluster-domain": "k8s.example",
        "image-registry": "mirror.example:5000/k8s",
        "kubernetes-version": "1.31.4",
    }
    _, _, app = _run(cluster, {}, config=options)
    assert app is not None
    assert json.loads(app.to_databag()["dns-address"]) == "10.96.0.10"
    assert app.dns_domain == "k8s.example"
    assert app.image_registry == "mirror.example:5000/k8s"
    assert app.kubernetes_version == "1.31.4"


def test_refusing_a_node_csr_says_whose_and_what(cluster) -> None:
    other = pki.Identity.of("system:node:w9", ["system:nodes"], ["w3"], ["10.0.1.8"])
    state, _, app = _run(
        cluster,
        {0: worker_bag("w0", ["10.0.1.5"]), 3: worker_bag("w3", ["10.0.1.8"], csr_identity=other)},
    )
    assert app is not None
    assert set(app.certificates) == {"worker/0"}
    assert state.unit_status.name == "active"  # the control plane itself serves
    assert state.unit_status.message.endswith(
        "; refusing worker/3's node certificate request: CN does not match its node name"
    )


def test_refusing_addresses_names_the_key(cluster) -> None:
    state, _, _ = _run(cluster, {2: worker_bag("w2", ["10.0.1.5", "10.0.9.9"])})
    assert (
        "refusing worker/2's node certificate request: addresses: not addresses of this unit"
        in state.unit_status.message
    )

"""The charm's contract with the bundle and the other charms: endpoints, options, actions."""

from __future__ import annotations

import re

import yaml
from builders import CHARM_ROOT


def _meta() -> dict:
    return yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())


def test_endpoints_are_the_relation_contract() -> None:
    meta = _meta()
    # cni is provided: Juju wants the subordinate to hold the container-scoped `requires` end.
    assert meta.get("provides") == {
        "kube-control": {"interface": "kaji-kube-control"},
        "cni": {"interface": "kaji-cni", "scope": "container", "limit": 1},
    }
    assert meta.get("requires") == {"etcd": {"interface": "kaji-etcd", "limit": 1}}
    assert meta.get("peers") == {"cluster": {"interface": "kaji-control-plane-peers"}}


def test_readme_documents_every_option_action_and_relation() -> None:
    meta = _meta()
    readme = (CHARM_ROOT / "README.md").read_text()
    names = [
        *meta["config"]["options"],
        *meta["actions"],
        *meta["provides"],
        *meta["requires"],
        *meta["peers"],
        *meta["resources"],
    ]
    missing = [n for n in names if not re.search(rf"`{re.escape(n)}`", readme)]
    assert not missing


def test_defaults_are_the_shared_defaults() -> None:
    options = _meta()["config"]["options"]
    assert options["kubernetes-version"]["default"] == "1.32.3"
    assert options["service-cidr"]["default"] == "10.152.183.0/24"
    assert options["cluster-domain"]["default"] == "cluster.local"
    assert options["image-registry"]["default"] == "registry.k8s.io"
    assert options["authorization-mode"]["default"] == "Node,RBAC"

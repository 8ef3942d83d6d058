"""The charm's contract: relation endpoints, and every option documented in the README."""

from __future__ import annotations

import pathlib

import yaml

CHARM_ROOT = pathlib.Path(__file__).parents[2]
META = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())


def test_endpoints_are_the_relation_contract() -> None:
    assert META.get("requires") == {
        "kube-control": {"interface": "kaji-kube-control", "limit": 1},
    }
    # Provided: Juju wants the subordinate (kaji-cni) to hold the container-scoped requires.
    assert META.get("provides") == {
        "cni": {"interface": "kaji-cni", "scope": "container", "limit": 1},
    }
    assert "peers" not in META


def test_readme_documents_every_option_resource_and_relation() -> None:
    readme = (CHARM_ROOT / "README.md").read_text()
    names = [
        *META["config"]["options"],
        *META["resources"],
        *META["requires"],
        *META["provides"],
    ]
    missing = [name for name in names if f"`{name}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"

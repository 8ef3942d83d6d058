"""The relation contract and the config options the bundle and the docs rely on."""

from __future__ import annotations

import pathlib

import yaml
from kaji_cni.config import DEFAULTS, CniConfig

CHARM_ROOT = pathlib.Path(__file__).parents[2]


def _meta() -> dict:
    return yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())


def test_endpoints_are_the_relation_contract() -> None:
    meta = _meta()
    assert meta.get("subordinate") is True
    # Juju refuses a subordinate without a container-scoped `requires` endpoint.
    assert meta.get("requires") == {"cni": {"interface": "kaji-cni", "scope": "container"}}
    assert "provides" not in meta
    assert meta.get("peers") == {"network": {"interface": "kaji-cni-network"}}


def test_config_defaults_are_the_ones_the_code_uses() -> None:
    options = _meta()["config"]["options"]
    assert {name: o["default"] for name, o in options.items()} == dict(DEFAULTS)
    assert CniConfig.from_options({}) == CniConfig.from_options(
        {name: o["default"] for name, o in options.items()}
    )


def test_readme_documents_every_option_and_status() -> None:
    readme = (CHARM_ROOT / "README.md").read_text()
    for option in _meta()["config"]["options"]:
        assert f"`{option}`" in readme
    for text in ("no free /", "set it back to", "waiting for the leader", "sandbox"):
        assert text in readme

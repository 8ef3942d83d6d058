"""The charm's declared contract: endpoints, options, actions, and the README documenting them."""

from __future__ import annotations

import pathlib

import yaml
from kaji_etcd.config import EtcdConfig

CHARM_ROOT = pathlib.Path(__file__).parents[2]
META = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())


def test_endpoints_are_the_relation_contract() -> None:
    assert META.get("provides") == {"db": {"interface": "kaji-etcd"}}
    assert META.get("peers") == {"cluster": {"interface": "kaji-etcd-peers"}}
    assert "requires" not in META


def test_every_option_default_is_valid() -> None:

    defaults = {k: v["default"] for k, v in META["config"]["options"].items()}
    config = EtcdConfig.from_options(defaults)
    assert (config.client_port, config.peer_port) == (2379, 2380)
    assert config.quota_backend_bytes == 2 * 1024**3


def test_readme_documents_every_option_action_and_resource() -> None:
    readme = (CHARM_ROOT / "README.md").read_text()
    names = [*META["config"]["options"], *META["actions"], *META["resources"]]
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"

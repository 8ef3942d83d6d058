"""Invalid config blocks the unit naming the option, before anything on the machine changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import DEFAULT_CONFIG
from kaji_etcd.config import EtcdConfig, parse_size
from ops import testing

from kaji.config import ConfigError

INVALID = [
    ({"election-timeout": 400}, "election-timeout", "at least 5x heartbeat-interval (500 ms)"),
    ({"heartbeat-interval": 300}, "election-timeout", "at least 5x heartbeat-interval (1500 ms)"),
    ({"client-port": 0}, "client-port", "between 1 and 65535"),
    ({"peer-port": 70000}, "peer-port", "between 1 and 65535"),
    ({"peer-port": 2379}, "peer-port", "must differ from client-port"),
    ({"quota-backend-bytes": "lots"}, "quota-backend-bytes", "is not a size"),
    ({"quota-backend-bytes": "200GiB"}, "quota-backend-bytes", "at most 100GiB"),
    ({"snapshot-count": 0}, "snapshot-count", "between 1 and"),
    ({"auto-compaction-mode": "sometimes"}, "auto-compaction-mode", "periodic or revision"),
    ({"auto-compaction-retention": "1 day"}, "auto-compaction-retention", "a duration"),
    (
        {"auto-compaction-mode": "revision", "auto-compaction-retention": "1h"},
        "auto-compaction-retention",
        "a revision count",
    ),
    ({"version": "latest"}, "version", "must look like 3.5.17"),
    ({"release-mirror": "ftp://mirror"}, "release-mirror", "http(s) URL"),
    ({"etcd-sha256": "abc"}, "etcd-sha256", "64 hex digits"),
]


@pytest.mark.parametrize(("change", "option", "reason"), INVALID)
def test_invalid_option_is_named(change: dict, option: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EtcdConfig.from_options({**DEFAULT_CONFIG, **change})
    assert caught.value.option == option
    assert reason in caught.value.reason


@pytest.mark.parametrize(("change", "option", "reason"), INVALID[:6])
def test_invalid_config_blocks_before_touching_the_machine(
    ctx: testing.Context, sandbox: Path, change: dict, option: str, reason: str
) -> None:
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(leader=True, config=change, relations={testing.PeerRelation("cluster")}),
    )
    assert state.unit_status.name == "blocked"
    assert state.unit_status.message.startswith(f"invalid config: {option}: ")
    assert reason in state.unit_status.message
    assert not any(sandbox.rglob("*")), "nothing may be written for an invalid config"
    assert not state.get_relations("cluster")[0].local_app_data
    assert not state.secrets


def test_invalid_change_leaves_a_running_member_as_it_was(
    ctx: testing.Context, sandbox: Path
) -> None:
    state = ctx.run(
        ctx.on.install(),
        testing.State(leader=True, relations={testing.PeerRelation("cluster")}),
    )
    files = {p: p.read_bytes() for p in sandbox.rglob("*") if p.is_file()}
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(
            leader=True,
            relations=state.relations,
            secrets=state.secrets,
            config={"election-timeout": 100},
        ),
    )
    assert state.unit_status.message.startswith("invalid config: election-timeout")
    assert {p: p.read_bytes() for p in sandbox.rglob("*") if p.is_file()} == files
    record = json.loads((sandbox / "var/lib/kaji/services/etcd.json").read_text())
    assert record.get("restarts", 0) == 0


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GiB", 2 * 1024**3), ("8G", 8 * 1024**3), ("512MiB", 512 * 1024**2), ("1024", 1024),
     ("1.5G", int(1.5 * 1024**3)), ("0", 0)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_config_reaches_etcd(ctx: testing.Context, sandbox: Path) -> None:
    ctx.run(
        ctx.on.install(),
        testing.State(
            leader=True,
            relations={testing.PeerRelation("cluster")},
            config={
                "client-port": 12379,
                "peer-port": 12380,
                "snapshot-count": 5000,
                "quota-backend-bytes": "8GiB",
                "auto-compaction-mode": "revision",
                "auto-compaction-retention": "1000",
            },
        ),
    )
    config = json.loads((sandbox / "etc/kaji/etcd/etcd.conf.yml").read_text())
    assert config["listen-client-urls"].endswith(":12379")
    assert config["listen-peer-urls"].endswith(":12380")
    assert config["snapshot-count"] == 5000
    assert config["quota-backend-bytes"] == 8 * 1024**3
    assert (config["auto-compaction-mode"], config["auto-compaction-retention"]) == (
        "revision",
        "1000",
    )

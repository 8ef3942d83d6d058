"""The small shared helpers every charm uses: option readers, refusing malformed relation data."""

from __future__ import annotations

import logging

import pytest

from kaji.config import ConfigError, int_option, shown, str_option
from kaji.interfaces import Refusal, RelationDataError, read_or_refuse


def test_int_option_names_the_option_and_the_bounds() -> None:
    assert int_option({"port": 2379}, "port", 1, 65535) == 2379
    assert int_option({}, "port", 1, 65535, default=7) == 7
    for bad, words in ((True, "integer"), ("1", "integer"), (0, "between 1 and 65535")):
        with pytest.raises(ConfigError) as caught:
            int_option({"port": bad}, "port", 1, 65535)
        assert caught.value.option == "port"
        assert words in caught.value.reason


def test_str_option_strips_and_refuses_other_types() -> None:
    assert str_option({"name": "  x \n"}, "name") == "x"
    with pytest.raises(ConfigError, match="name: must be a string"):
        str_option({"name": 3}, "name")
    with pytest.raises(ConfigError):
        str_option({}, "name")


def test_shown_cuts_long_values() -> None:
    assert shown("a" * 1000).endswith("...")
    assert len(shown("a" * 1000)) == 60
    assert shown(5) == "5"


def test_read_or_refuse_names_sender_and_key_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    def read(bag: object) -> str:
        raise RelationDataError("node-name", "not a DNS name")

    with caplog.at_level(logging.WARNING):
        result = read_or_refuse(
            read, {}, sender="worker/3", what="node data", log=logging.getLogger("t")
        )
    assert isinstance(result, Refusal)
    assert result.message() == "refusing worker/3's node data: node-name: not a DNS name"
    assert "worker/3" in caplog.text
    assert read_or_refuse(lambda bag: 5, {}, sender="x", what="y", log=logging.getLogger()) == 5
    long = Refusal("worker/3", "node data", "k", "r" * 500)
    assert len(long.message()) == 200

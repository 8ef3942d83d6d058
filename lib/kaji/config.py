"""Charm options: the one error type and the typed readers every kaji charm's config uses.

Each charm has one ``<Charm>Config`` (in ``src/kaji_<charm>/config.py``), a frozen dataclass
built by ``<Charm>Config.from_options(charm.config)``, which validates every option without side
effects and raises :class:`ConfigError` naming the first bad one; the charm then blocks with that
option's name and changes nothing. This module has no ops import.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ConfigError", "int_option", "shown", "str_option"]


class ConfigError(ValueError):
    """An invalid option: ``option`` names it, ``reason`` says what is wrong."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


def shown(value: object, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def int_option(
    options: Mapping[str, object],
    name: str,
    low: int,
    high: int,
    default: int | None = None,
) -> int:
    """Option ``name`` as an integer in ``low..high`` (``default`` when it is missing)."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {shown(value)}")
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def str_option(options: Mapping[str, object], name: str, default: str | None = None) -> str:
    """Option ``name`` as a string, surrounding white space removed."""
    value = options.get(name, default)
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {shown(value)}")
    return value.strip()

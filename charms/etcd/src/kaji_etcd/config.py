"""The etcd charm's options, validated: :class:`EtcdConfig` (no ops import)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kaji.config import ConfigError, int_option, shown, str_option
from kaji_etcd.literals import DEFAULT_MIRROR, DEFAULT_VERSION, SHA256_HEX

__all__ = ["EtcdConfig", "parse_size"]

_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)(i?)[Bb]?")
_DURATION = re.compile(r"(\d+)([smh]?)")
_MIRROR = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")
_MAX_QUOTA = 100 * 1024**3


def parse_size(text: str) -> int:
    """Parse ``2GiB``, ``512M``, ``8G`` or a plain byte count; K/M/G/T are powers of 1024.

    Raises:
        ValueError: not a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{shown(text)} is not a size (e.g. 2GiB, 512MiB, 8G)")
    number, unit, _ = match.groups()
    power = " KMGT".index(unit.upper()) if unit else 0
    return int(float(number) * 1024**power)


@dataclass(frozen=True)
class EtcdConfig:
    """The validated charm configuration that shapes etcd."""

    version: str = DEFAULT_VERSION
    client_port: int = 2379
    peer_port: int = 2380
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    snapshot_count: int = 10000
    quota_backend_bytes: int = 2 * 1024**3
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "1h"
    mirror_url: str = DEFAULT_MIRROR
    sha256: str = ""

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> EtcdConfig:
        """Validate every option at once (no side effects) and return the config.

        Raises:
            ConfigError: the first invalid option, named, with the reason.
        """
        version = str_option(options, "version")
        if not _VERSION.fullmatch(version):
            raise ConfigError("version", f"must look like 3.5.17, got {shown(version)}")
        client_port = int_option(options, "client-port", 1, 65535)
        peer_port = int_option(options, "peer-port", 1, 65535)
        if client_port == peer_port:
            raise ConfigError("peer-port", f"must differ from client-port ({client_port})")
        heartbeat = int_option(options, "heartbeat-interval", 10, 10000)
        election = int_option(options, "election-timeout", 50, 50000)
        if election < 5 * heartbeat:
            raise ConfigError(
                "election-timeout",
                f"must be at least 5x heartbeat-interval ({5 * heartbeat} ms), got {election} ms",
            )
        snapshot_count = int_option(options, "snapshot-count", 1, 10**9)
        quota_text = str_option(options, "quota-backend-bytes")
        try:
            quota = parse_size(quota_text)
        except ValueError as error:
            raise ConfigError("quota-backend-bytes", str(error)) from None
        if quota > _MAX_QUOTA:
            raise ConfigError("quota-backend-bytes", f"must be at most 100GiB, got {quota_text}")
        mode = str_option(options, "auto-compaction-mode")
        if mode not in ("periodic", "revision"):
            raise ConfigError(
                "auto-compaction-mode", f"must be periodic or revision, got {shown(mode)}"
            )
        retention = str_option(options, "auto-compaction-retention")
        match = _DURATION.fullmatch(retention)
        if not match or (mode == "revision" and match.group(2)):
            expected = "a revision count" if mode == "revision" else "a duration like 1h or 30m"
            raise ConfigError(
                "auto-compaction-retention", f"must be {expected}, got {shown(retention)}"
            )
        mirror = str_option(options, "release-mirror").rstrip("/")
        if not _MIRROR.fullmatch(mirror):
            raise ConfigError("release-mirror", f"must be an http(s) URL, got {shown(mirror)}")
        sha256 = str_option(options, "etcd-sha256").lower()
        if sha256 and not re.fullmatch(SHA256_HEX, sha256):
            raise ConfigError("etcd-sha256", "must be empty or 64 hex digits")
        return cls(
            version=version,
            client_port=client_port,
            peer_port=peer_port,
            heartbeat_interval=heartbeat,
            election_timeout=election,
            snapshot_count=snapshot_count,
            quota_backend_bytes=quota,
            auto_compaction_mode=mode,
            auto_compaction_retention=retention,
            mirror_url=mirror,
            sha256=sha256,
        )

"""kaji-cni's options: :class:`CniConfig`, validated from the charm config without side effects."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaji.config import ConfigError, int_option, str_option
from kaji_cni.literals import BACKENDS

__all__ = ["DEFAULTS", "UNUSABLE_FOR_PODS", "CniConfig"]

DEFAULTS: Mapping[str, Any] = {
    "cidr": "10.1.0.0/16",
    "node-prefix": 24,
    "backend": "vxlan",
    "mtu": 1500,
    "vni": 1,
    "vxlan-port": 4789,
}
#: Address ranges a pod network must not overlap: "this network", loopback, link-local,
#: multicast and the reserved range with the limited broadcast address (RFC 6890).
UNUSABLE_FOR_PODS = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
)


@dataclass(frozen=True)
class CniConfig:
    """The validated charm config."""

    cidr: str
    node_prefix: int
    backend: str
    mtu: int
    vni: int
    vxlan_port: int

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> CniConfig:
        """Validate the charm config (missing options take their defaults).

        Raises:
            ConfigError: the first invalid option, with the reason.
        """
        raw_cidr = options.get("cidr", DEFAULTS["cidr"])
        text = str_option(options, "cidr", DEFAULTS["cidr"])
        try:
            cidr = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ConfigError("cidr", f"{raw_cidr!r} is not a network/prefix ({exc})") from None
        if not isinstance(cidr, ipaddress.IPv4Network):
            raise ConfigError("cidr", "only IPv4 pod networks are supported")
        if cidr.prefixlen > 28:
            raise ConfigError("cidr", f"{cidr} is too small for a pod network (at most /28)")
        unusable = next((n for n in UNUSABLE_FOR_PODS if cidr.overlaps(n)), None)
        if unusable is not None:
            raise ConfigError("cidr", f"{cidr} overlaps {unusable}, which pods cannot use")
        node_prefix = int_option(options, "node-prefix", 1, 28, DEFAULTS["node-prefix"])
        if node_prefix < cidr.prefixlen:
            raise ConfigError(
                "node-prefix", f"/{node_prefix} is larger than the cluster cidr {cidr.compressed}"
            )
        backend = options.get("backend", DEFAULTS["backend"])
        if backend not in BACKENDS:
            raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
        return cls(
            cidr=cidr.compressed,
            node_prefix=node_prefix,
            backend=str(backend),
            mtu=int_option(options, "mtu", 1280, 9216, DEFAULTS["mtu"]),
            vni=int_option(options, "vni", 1, 2**24 - 1, DEFAULTS["vni"]),
            vxlan_port=int_option(options, "vxlan-port", 1, 65535, DEFAULTS["vxlan-port"]),
        )

"""The worker's config options, parsed and validated before anything on the machine changes.

``WorkerConfig.from_options(charm.config)`` raises :class:`kaji.config.ConfigError` naming the
first bad option; the charm then blocks with ``invalid config <option>: <reason>``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from kaji import kubernetes
from kaji.config import ConfigError, str_option

PROXY_MODES = ("iptables", "ipvs", "nftables")
#: kube-proxy's nftables mode is beta (on by default) from this release.
NFTABLES_MINOR = (1, 31)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

#: KubeletConfiguration keys the charm owns: kubelet-extra-config may not set them.
KUBELET_OWNED_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "authentication",
        "authorization",
        "cgroupDriver",
        "clusterDNS",
        "clusterDomain",
        "containerRuntimeEndpoint",
        "registerWithTaints",
        "tlsCertFile",
        "tlsPrivateKeyFile",
    }
)
#: KubeProxyConfiguration keys the charm owns: proxy-extra-config may not set them.
PROXY_OWNED_KEYS = frozenset(
    {"apiVersion", "kind", "clientConnection", "clusterCIDR", "hostnameOverride", "mode"}
)

_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
#: Label namespaces under kubernetes.io/k8s.io a kubelet may set on its own node
#: (the NodeRestriction admission plugin refuses the others).
_KUBELET_LABELS = frozenset(
    {
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "kubernetes.io/arch",
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    }
)
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


@dataclass(frozen=True)
class Taint:
    """A node taint ``key[=value]:effect``."""

    key: str
    value: str
    effect: str

    def as_config(self) -> dict[str, str]:
        """The taint as a KubeletConfiguration ``registerWithTaints`` item."""
        item = {"key": self.key, "effect": self.effect}
        if self.value:
            item["value"] = self.value
        return item


@dataclass(frozen=True)
class WorkerConfig:
    """Every worker option, validated and normalised."""

    node_labels: dict[str, str] = field(default_factory=dict)
    node_taints: tuple[Taint, ...] = ()
    proxy_mode: str = "iptables"
    registry_mirrors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kubelet_extra_config: dict[str, Any] = field(default_factory=dict)
    proxy_extra_config: dict[str, Any] = field(default_factory=dict)
    #: ``https://host:port`` of an external API load balancer, or None.
    loadbalancer_url: str | None = None
    release_mirror: str = kubernetes.DEFAULT_RELEASE_MIRROR
    kubernetes_node_sha256: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> WorkerConfig:
        """Every option from the charm config.

        Raises:
            ConfigError: the first bad option, named.
        """

        def text(name: str) -> str:
            return str_option(options, name, "")

        def raw(name: str) -> str:
            """The option as given (YAML: leading indentation matters)."""
            text(name)  # a string, or ConfigError
            return str(options.get(name, ""))

        mode = text("proxy-mode") or "iptables"
        if mode not in PROXY_MODES:
            raise ConfigError("proxy-mode", f"{mode!r} is not one of {', '.join(PROXY_MODES)}")
        mirror = text("release-mirror") or kubernetes.DEFAULT_RELEASE_MIRROR
        mirror = _check_url("release-mirror", mirror, ("http", "https"))
        sha = text("kubernetes-node-sha256").lower() or None
        if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ConfigError("kubernetes-node-sha256", "must be 64 hex digits")
        return cls(
            node_labels=parse_labels(text("node-labels")),
            node_taints=parse_taints(text("node-taints")),
            proxy_mode=mode,
            registry_mirrors=parse_mirrors(text("registry-mirrors")),
            kubelet_extra_config=parse_extra_config(
                "kubelet-extra-config", raw("kubelet-extra-config"), KUBELET_OWNED_KEYS
            ),
            proxy_extra_config=parse_extra_config(
                "proxy-extra-config", raw("proxy-extra-config"), PROXY_OWNED_KEYS
            ),
            loadbalancer_url=parse_loadbalancer(text("loadbalancer-address")),
            release_mirror=mirror,
            kubernetes_node_sha256=sha,
        )

    def check_version(self, version: kubernetes.KubernetesVersion) -> None:
        """Checks that need the Kubernetes version the control plane publishes.

        Raises:
            ConfigError: proxy-mode nftables before 1.31.
        """
        if self.proxy_mode == "nftables" and version.minor_version < NFTABLES_MINOR:
            raise ConfigError(
                "proxy-mode", f"nftables needs Kubernetes 1.31 or later (cluster runs {version})"
            )


def _check_label_key(option: str, key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if not _LABEL_NAME.fullmatch(name) or len(name) > 63:
        raise ConfigError(option, f"{key!r} is not a valid label or taint key")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ConfigError(option, f"prefix of {key!r} is not a DNS subdomain")


def parse_labels(text: str) -> dict[str, str]:
    """``node-labels``: space-separated ``key=value``."""
    labels: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise ConfigError("node-labels", f"{word!r} is not key=value")
        _check_label_key("node-labels", key)
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise ConfigError("node-labels", f"{value!r} is not a valid label value")
        prefix = key.rpartition("/")[0]
        if (
            prefix.endswith(("kubernetes.io", "k8s.io"))
            and key not in _KUBELET_LABELS
            and not prefix.endswith(_KUBELET_LABEL_NAMESPACES)
        ):
            raise ConfigError(
                "node-labels", f"{key!r}: a kubelet may not set kubernetes.io/k8s.io labels"
            )
        if key in labels:
            raise ConfigError("node-labels", f"{key!r} given twice")
        labels[key] = value
    return labels


def parse_taints(text: str) -> tuple[Taint, ...]:
    """``node-taints``: space-separated ``key[=value]:Effect``."""
    taints: list[Taint] = []
    for word in text.split():
        spec, colon, effect = word.rpartition(":")
        if not colon or effect not in TAINT_EFFECTS:
            raise ConfigError(
                "node-taints", f"{word!r} is not key[=value]:effect ({', '.join(TAINT_EFFECTS)})"
            )
        key, _, value = spec.partition("=")
        _check_label_key("node-taints", key)
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise ConfigError("node-taints", f"{value!r} is not a valid taint value")
        if any(t.key == key and t.effect == effect for t in taints):
            raise ConfigError("node-taints", f"{key}:{effect} given twice")
        taints.append(Taint(key, value, effect))
    return tuple(taints)


def _check_url(option: str, url: str, schemes: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(option, f"{url!r}: {exc}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(option, f"{url!r} is not a {'/'.join(schemes)} URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(option, f"{url!r} must not hold credentials, a query or a fragment")
    if port == 0:
        raise ConfigError(option, f"{url!r} has port 0")
    return url.rstrip("/")


def _is_registry_host(registry: str) -> bool:
    """A registry as kaji.kubernetes defines one, host[:port] alone (a mirror's key), lowercase."""
    try:
        kubernetes.check_image_registry(registry)
    except ValueError:
        return False
    return "/" not in registry and registry == registry.lower()


def parse_mirrors(text: str) -> dict[str, tuple[str, ...]]:
    """``registry-mirrors``: space-separated ``registry=url[,url...]``."""
    mirrors: dict[str, tuple[str, ...]] = {}
    for word in text.split():
        registry, sep, urls = word.partition("=")
        if not sep or not urls:
            raise ConfigError("registry-mirrors", f"{word!r} is not registry=url[,url...]")
        if registry != "_default" and not _is_registry_host(registry):
            raise ConfigError("registry-mirrors", f"{registry!r} is not a registry host[:port]")
        if registry in mirrors:
            raise ConfigError("registry-mirrors", f"{registry!r} given twice")
        mirrors[registry] = tuple(
            _check_url("registry-mirrors", u, ("http", "https")) for u in urls.split(",")
        )
    return mirrors


#: Nesting a component config never needs (and that stays far from Python's recursion limit).
MAX_EXTRA_CONFIG_DEPTH = 32


def _plain(option: str, value: Any, depth: int, seen: set[int]) -> None:
    """``value`` is JSON-like data: what a component config (JSON/YAML API object) can hold."""
    if depth > MAX_EXTRA_CONFIG_DEPTH:
        raise ConfigError(option, f"nested deeper than {MAX_EXTRA_CONFIG_DEPTH} levels")
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            raise ConfigError(option, "YAML aliases (&anchor/*alias) are not supported")
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ConfigError(option, f"key {key!r} is not a string")
                _plain(option, item, depth + 1, seen)
        else:
            for item in value:
                _plain(option, item, depth + 1, seen)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(option, f"{value} is not a number a config can hold")
    elif value is not None and not isinstance(value, (str, int, float)):  # bool is an int
        raise ConfigError(option, f"a YAML {type(value).__name__} is not a config value")


def parse_extra_config(option: str, text: str, owned: frozenset[str]) -> dict[str, Any]:
    """A YAML mapping merged over a component config; keys the charm owns are refused."""
    if not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(option, f"not YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(option, "nested too deeply") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(option, "must be a YAML mapping with string keys")
    _plain(option, data, 0, set())
    if refused := sorted(set(data) & owned):
        raise ConfigError(option, f"set by the charm, not configurable: {', '.join(refused)}")
    return data


def parse_loadbalancer(text: str) -> str | None:
    """``loadbalancer-address``: ``host[:port]`` or ``https://host[:port]``; port 6443 default."""
    text = text.strip()
    if not text:
        return None
    if "://" not in text:
        try:
            ipaddress.IPv6Address(text)
            text = f"[{text}]"
        except ValueError:
            pass
        text = f"https://{text}"
    url = _check_url("loadbalancer-address", text, ("https",))
    parts = urlsplit(url)
    if parts.path:
        raise ConfigError("loadbalancer-address", f"{url!r} must not have a path")
    host = parts.hostname or ""
    if ":" not in host and not _DNS_SUBDOMAIN.fullmatch(host.lower()):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError("loadbalancer-address", f"{host!r} is not a host") from None
    return url if parts.port else kubernetes.api_url(host, kubernetes.APISERVER_PORT)

"""The worker's config options, parsed and validated before anything on the machine changes."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kaji import kubernetes

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
_REGISTRY_HOST = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?")
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


class OptionError(ValueError):
    """An invalid config option; the message names it."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"invalid config {option}: {reason}")
        self.option = option
        self.reason = reason


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
class WorkerOptions:
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

    def check_version(self, version: kubernetes.KubernetesVersion) -> None:
        """Checks that need the Kubernetes version the control plane publishes.

        Raises:
            OptionError: proxy-mode nftables before 1.31.
        """
        if self.proxy_mode == "nftables" and version.minor_version < NFTABLES_MINOR:
            raise OptionError(
                "proxy-mode", f"nftables needs Kubernetes 1.31 or later (cluster runs {version})"
            )


def _check_label_key(option: str, key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if not _LABEL_NAME.fullmatch(name) or len(name) > 63:
        raise OptionError(option, f"{key!r} is not a valid label or taint key")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise OptionError(option, f"prefix of {key!r} is not a DNS subdomain")


def parse_labels(text: str) -> dict[str, str]:
    """``node-labels``: space-separated ``key=value``."""
    labels: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise OptionError("node-labels", f"{word!r} is not key=value")
        _check_label_key("node-labels", key)
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise OptionError("node-labels", f"{value!r} is not a valid label value")
        prefix = key.rpartition("/")[0]
        if (
            prefix.endswith(("kubernetes.io", "k8s.io"))
            and key not in _KUBELET_LABELS
            and not prefix.endswith(_KUBELET_LABEL_NAMESPACES)
        ):
            raise OptionError(
                "node-labels", f"{key!r}: a kubelet may not set kubernetes.io/k8s.io labels"
            )
        if key in labels:
            raise OptionError("node-labels", f"{key!r} given twice")
        labels[key] = value
    return labels


def parse_taints(text: str) -> tuple[Taint, ...]:
    """``node-taints``: space-separated ``key[=value]:Effect``."""
    taints: list[Taint] = []
    for word in text.split():
        spec, colon, effect = word.rpartition(":")
        if not colon or effect not in TAINT_EFFECTS:
            raise OptionError(
                "node-taints", f"{word!r} is not key[=value]:effect ({', '.join(TAINT_EFFECTS)})"
            )
        key, _, value = spec.partition("=")
        _check_label_key("node-taints", key)
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise OptionError("node-taints", f"{value!r} is not a valid taint value")
        if any(t.key == key and t.effect == effect for t in taints):
            raise OptionError("node-taints", f"{key}:{effect} given twice")
        taints.append(Taint(key, value, effect))
    return tuple(taints)


def _check_url(option: str, url: str, schemes: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OptionError(option, f"{url!r}: {exc}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise OptionError(option, f"{url!r} is not a {'/'.join(schemes)} URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise OptionError(option, f"{url!r} must not hold credentials, a query or a fragment")
    if port == 0:
        raise OptionError(option, f"{url!r} has port 0")
    return url.rstrip("/")


def parse_mirrors(text: str) -> dict[str, tuple[str, ...]]:
    """``registry-mirrors``: space-separated ``registry=url[,url...]``."""
    mirrors: dict[str, tuple[str, ...]] = {}
    for word in text.split():
        registry, sep, urls = word.partition("=")
        if not sep or not urls:
            raise OptionError("registry-mirrors", f"{word!r} is not registry=url[,url...]")
        if registry != "_default" and not _REGISTRY_HOST.fullmatch(registry):
            raise OptionError("registry-mirrors", f"{registry!r} is not a registry host[:port]")
        if registry in mirrors:
            raise OptionError("registry-mirrors", f"{registry!r} given twice")
        mirrors[registry] = tuple(
            _check_url("registry-mirrors", u, ("http", "https")) for u in urls.split(",")
        )
    return mirrors


#: Nesting a component config never needs (and that stays far from Python's recursion limit).
MAX_EXTRA_CONFIG_DEPTH = 32


def _plain(option: str, value: Any, depth: int, seen: set[int]) -> None:
    """``value`` is JSON-like data: what a component config (JSON/YAML API object) can hold."""
    import math

    if depth > MAX_EXTRA_CONFIG_DEPTH:
        raise OptionError(option, f"nested deeper than {MAX_EXTRA_CONFIG_DEPTH} levels")
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            raise OptionError(option, "YAML aliases (&anchor/*alias) are not supported")
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise OptionError(option, f"key {key!r} is not a string")
                _plain(option, item, depth + 1, seen)
        else:
            for item in value:
                _plain(option, item, depth + 1, seen)
    elif isinstance(value, float) and not math.isfinite(value):
        raise OptionError(option, f"{value} is not a number a config can hold")
    elif value is not None and not isinstance(value, (str, int, float)):  # bool is an int
        raise OptionError(option, f"a YAML {type(value).__name__} is not a config value")


def parse_extra_config(option: str, text: str, owned: frozenset[str]) -> dict[str, Any]:
    """A YAML mapping merged over a component config; keys the charm owns are refused."""
    if not text.strip():
        return {}
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OptionError(option, f"not YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise OptionError(option, "nested too deeply") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise OptionError(option, "must be a YAML mapping with string keys")
    _plain(option, data, 0, set())
    if refused := sorted(set(data) & owned):
        raise OptionError(option, f"set by the charm, not configurable: {', '.join(refused)}")
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
        raise OptionError("loadbalancer-address", f"{url!r} must not have a path")
    host = parts.hostname or ""
    if ":" not in host and not _DNS_SUBDOMAIN.fullmatch(host.lower()):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise OptionError("loadbalancer-address", f"{host!r} is not a host") from None
    return url if parts.port else kubernetes.api_url(host, kubernetes.APISERVER_PORT)


def parse_options(config: Mapping[str, Any]) -> WorkerOptions:
    """Every option from the charm config; raise OptionError naming the first bad one."""

    def text(name: str) -> str:
        value = config.get(name, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise OptionError(name, "must be a string")
        return value

    mode = text("proxy-mode").strip() or "iptables"
    if mode not in PROXY_MODES:
        raise OptionError("proxy-mode", f"{mode!r} is not one of {', '.join(PROXY_MODES)}")
    mirror = text("release-mirror").strip() or kubernetes.DEFAULT_RELEASE_MIRROR
    mirror = _check_url("release-mirror", mirror, ("http", "https"))
    sha = text("kubernetes-node-sha256").strip().lower() or None
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise OptionError("kubernetes-node-sha256", "must be 64 hex digits")
    return WorkerOptions(
        node_labels=parse_labels(text("node-labels")),
        node_taints=parse_taints(text("node-taints")),
        proxy_mode=mode,
        registry_mirrors=parse_mirrors(text("registry-mirrors")),
        kubelet_extra_config=parse_extra_config(
            "kubelet-extra-config", text("kubelet-extra-config"), KUBELET_OWNED_KEYS
        ),
        proxy_extra_config=parse_extra_config(
            "proxy-extra-config", text("proxy-extra-config"), PROXY_OWNED_KEYS
        ),
        loadbalancer_url=parse_loadbalancer(text("loadbalancer-address")),
        release_mirror=mirror,
        kubernetes_node_sha256=sha,
    )

"""The control plane's options: :class:`ControlPlaneConfig`, validated without side effects.

No ops here. An invalid option raises :class:`kaji.config.ConfigError` naming it; the charm then
blocks with that name and changes nothing on the machine.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping

import yaml

from kaji import kubernetes as k8s
from kaji.config import ConfigError, int_option, str_option

from .literals import AUTHORIZATION_MODES


@dataclasses.dataclass(frozen=True)
class ControlPlaneConfig:
    """The validated options of the application."""

    version: k8s.KubernetesVersion
    service_cidr: str
    dns_domain: str
    extra_dns_names: tuple[str, ...]
    extra_ip_addresses: tuple[str, ...]
    loadbalancer_address: str | None
    image_registry: str
    authorization_mode: str
    audit_policy: str | None
    audit_log_maxage: int
    audit_log_maxbackup: int
    audit_log_maxsize: int
    api_extra_args: Mapping[str, str]
    controller_manager_extra_args: Mapping[str, str]
    scheduler_extra_args: Mapping[str, str]
    release_mirror: str
    kubernetes_sha256: str | None

    @property
    def service_ip(self) -> str:
        """The ``kubernetes`` service address (first host of the service CIDR)."""
        return k8s.apiserver_service_ip(self.service_cidr)

    @property
    def dns_address(self) -> str:
        """The cluster DNS service address (10th host of the service CIDR)."""
        return k8s.dns_address(self.service_cidr)

    @property
    def service_account_issuer(self) -> str:
        """The issuer of service-account tokens."""
        return f"https://kubernetes.default.svc.{self.dns_domain}"

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> ControlPlaneConfig:
        """Validate every option; raise ConfigError naming the first bad one.

        Raises:
            ConfigError: an invalid option (the charm blocks and changes nothing).
        """
        return _from_options(options)

    def check_pod_cidr(self, pod_cidr: str) -> None:
        """Refuse a service CIDR of another IP family than the pod network, or overlapping it.

        A single-stack cluster has one family: kube-proxy, the cni's rules and kubelet's cluster
        DNS address all assume the service and pod networks share it.

        Raises:
            ConfigError: on ``service-cidr``.
        """
        service, pods = k8s.parse_cidr(self.service_cidr), k8s.parse_cidr(pod_cidr)
        if service.version != pods.version:
            raise ConfigError(
                "service-cidr",
                f"{self.service_cidr} is IPv{service.version} but the pod network {pod_cidr}"
                f" (from cni) is IPv{pods.version}: the IP families must match",
            )
        if k8s.cidrs_overlap(self.service_cidr, pod_cidr):
            raise ConfigError(
                "service-cidr", f"{self.service_cidr} overlaps the pod network {pod_cidr}"
            )


def _split_words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def _check_san(option: str, word: str) -> tuple[str | None, str | None]:
    """One SAN of ``option``: (DNS name, None) or (None, IP address), normalised."""
    try:
        return None, ipaddress.ip_address(word).compressed
    except ValueError:
        pass
    try:
        return k8s.check_dns_domain(word.lower()), None
    except ValueError:
        pass
    hint = ""
    if "://" in word or word.rpartition(":")[2].isdigit() or "/" in word:
        hint = " (give the host alone: no scheme, port or path)"
    raise ConfigError(option, f"{word[:100]!r} is neither an IP address nor a DNS name{hint}")


def _check_sans(option: str, text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names: list[str] = []
    ips: list[str] = []
    for word in _split_words(text):
        name, ip = _check_san(option, word)
        if name is not None:
            names.append(name)
        if ip is not None:
            ips.append(ip)
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(ips))


def _from_options(options: Mapping[str, object]) -> ControlPlaneConfig:
    def text(name: str) -> str:
        return str_option(options, name, default="")

    try:
        version = k8s.check_version(text("kubernetes-version"))
    except k8s.UnsupportedVersionError as exc:
        raise ConfigError("kubernetes-version", str(exc)) from None
    try:
        network = k8s.parse_cidr(text("service-cidr"))
        service_cidr = str(network)
        k8s.dns_address(service_cidr)
    except ValueError as exc:
        raise ConfigError("service-cidr", str(exc)) from None
    if network.version == 4 and network.prefixlen < 12:
        raise ConfigError("service-cidr", "an IPv4 service network must be /12 or smaller")
    if network.version == 6 and network.prefixlen < 108:
        raise ConfigError("service-cidr", "an IPv6 service network must be /108 or smaller")
    try:
        dns_domain = k8s.check_dns_domain(text("cluster-domain"))
    except ValueError as exc:
        raise ConfigError("cluster-domain", str(exc)) from None
    extra_dns, extra_ips = _check_sans("extra-sans", text("extra-sans"))
    lb = text("loadbalancer-address") or None
    if lb is not None:
        if len(_split_words(lb)) != 1:
            raise ConfigError(
                "loadbalancer-address", f"{lb[:100]!r} is not one IP address or DNS name"
            )
        lb_name, lb_ip = _check_san("loadbalancer-address", lb)
        lb = lb_name or lb_ip
        extra_dns = tuple(dict.fromkeys((*extra_dns, *filter(None, [lb_name]))))
        extra_ips = tuple(dict.fromkeys((*extra_ips, *filter(None, [lb_ip]))))
    try:
        registry = k8s.check_image_registry(text("image-registry"))
    except ValueError as exc:
        raise ConfigError("image-registry", str(exc)) from None
    modes = [m.strip() for m in text("authorization-mode").split(",") if m.strip()]
    if unknown := [m for m in modes if m not in AUTHORIZATION_MODES]:
        raise ConfigError("authorization-mode", f"unknown mode(s) {', '.join(unknown)}")
    if len(set(modes)) != len(modes):
        raise ConfigError("authorization-mode", "a mode is listed twice")
    if "Node" not in modes or "RBAC" not in modes:
        raise ConfigError("authorization-mode", "must include Node and RBAC")
    audit_policy = text("audit-policy") or None
    if audit_policy is not None:
        _check_audit_policy(audit_policy)
    extra: dict[str, Mapping[str, str]] = {}
    for option, component in (
        ("api-extra-args", "kube-apiserver"),
        ("controller-manager-extra-args", "kube-controller-manager"),
        ("scheduler-extra-args", "kube-scheduler"),
    ):
        try:
            extra[option] = k8s.check_extra_args(component, version, text(option))
        except k8s.ExtraArgsError as exc:
            raise ConfigError(option, str(exc)) from None
    try:
        mirror = text("release-mirror")
        k8s.server_tarball_url(version, "amd64", mirror)
    except ValueError as exc:
        raise ConfigError("release-mirror", str(exc)) from None
    sha = text("kubernetes-sha256").lower() or None
    if sha is not None:
        try:
            k8s.parse_sha256_file(sha)
        except ValueError:
            raise ConfigError("kubernetes-sha256", "must be 64 hex digits") from None
    return ControlPlaneConfig(
        version=version,
        service_cidr=service_cidr,
        dns_domain=dns_domain,
        extra_dns_names=extra_dns,
        extra_ip_addresses=extra_ips,
        loadbalancer_address=lb,
        image_registry=registry,
        authorization_mode=",".join(modes),
        audit_policy=audit_policy,
        audit_log_maxage=int_option(options, "audit-log-maxage", 0, 3650),
        audit_log_maxbackup=int_option(options, "audit-log-maxbackup", 0, 1000),
        audit_log_maxsize=int_option(options, "audit-log-maxsize", 1, 100000),
        api_extra_args=extra["api-extra-args"],
        controller_manager_extra_args=extra["controller-manager-extra-args"],
        scheduler_extra_args=extra["scheduler-extra-args"],
        release_mirror=mirror.rstrip("/"),
        kubernetes_sha256=sha,
    )


def _check_audit_policy(text: str) -> None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("audit-policy", f"not YAML: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("kind") != "Policy"
        or doc.get("apiVersion") != "audit.k8s.io/v1"
        or not isinstance(doc.get("rules"), list)
        or not doc["rules"]
    ):
        raise ConfigError("audit-policy", "must be an audit.k8s.io/v1 Policy with rules")

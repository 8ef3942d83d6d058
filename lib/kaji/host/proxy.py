"""The model's proxy settings, as Juju hands them to charms, and which URLs they apply to.

Juju passes its ``juju-http-proxy``, ``juju-https-proxy`` and ``juju-no-proxy`` model config to
every hook as ``JUJU_CHARM_HTTP_PROXY``, ``JUJU_CHARM_HTTPS_PROXY`` and ``JUJU_CHARM_NO_PROXY``
(set, possibly empty, in every hook; ops does not wrap them). :func:`proxy_settings` is the one
place kaji reads them; downloads (:mod:`kaji.host.binaries`) and services that fetch on their
own (containerd's image pulls, through :meth:`ProxySettings.environment`) use what it returns.
The legacy ``http_proxy``/``HTTP_PROXY`` variables Juju sets from the ``http-proxy`` model
config are deliberately not used: Juju documents ``juju-*-proxy`` as the charms' settings.

``no_proxy`` follows Go's ``net/http`` rules (what containerd applies to the same list):
entries are comma-separated; ``*`` matches every host; an IP or CIDR matches addresses in it;
``example.com`` matches that host and its subdomains, ``.example.com`` and ``*.example.com``
only the subdomains; ``host:port`` also requires the port (80/443 when the URL has none).
Unlike Go, loopback addresses are proxied unless listed (Juju's default ``juju-no-proxy``
lists ``127.0.0.1,localhost,::1``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from kaji.host.errors import HostError

#: Hook environment variable -> the model config key it comes from.
HTTP_PROXY = "JUJU_CHARM_HTTP_PROXY"
HTTPS_PROXY = "JUJU_CHARM_HTTPS_PROXY"
NO_PROXY = "JUJU_CHARM_NO_PROXY"
MODEL_KEYS = {
    HTTP_PROXY: "juju-http-proxy",
    HTTPS_PROXY: "juju-https-proxy",
    NO_PROXY: "juju-no-proxy",
}
_MAX_LENGTH = 64 * 1024
_NO_PROXY_ENTRY = re.compile(r"[A-Za-z0-9._*:\[\]/%-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ProxyError(HostError, ValueError):
    """A proxy setting is unusable; the message names the model config key."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"invalid model config {MODEL_KEYS[variable]} ({variable}): {reason}")
        self.variable = variable
        self.reason = reason


def redact(url: str) -> str:
    """``url`` without its user and password (for logs and status messages)."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable URL>"


def _proxy_url(variable: str, value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if len(value) > 2048:
        raise ProxyError(variable, f"{len(value)} characters long")
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ProxyError(variable, "contains whitespace or control characters")
    if "://" not in value:
        value = f"http://{value}"  # Juju and curl accept host:port alone
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ProxyError(variable, f"{redact(value)!r}: {exc}") from None
    if parts.scheme != "http":
        raise ProxyError(variable, f"{redact(value)!r}: only http:// proxies are supported")
    if not parts.hostname:
        raise ProxyError(variable, f"{redact(value)!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyError(variable, f"{redact(value)!r} must be scheme://[user:pass@]host[:port]")
    if port == 0:
        raise ProxyError(variable, f"{redact(value)!r} has port 0")
    return value.rstrip("/")


@dataclass(frozen=True)
class _Match:
    """One ``no_proxy`` entry."""

    kind: str  # "all", "net" or "domain"
    value: str = ""
    port: int | None = None
    exact: bool = True  # domain entries: also the host itself, not only its subdomains


def _no_proxy_entries(value: str) -> tuple[str, ...]:
    if len(value) > _MAX_LENGTH:
        raise ProxyError(NO_PROXY, f"{len(value)} characters long")
    entries = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if not _NO_PROXY_ENTRY.fullmatch(entry):
            raise ProxyError(NO_PROXY, f"{entry[:100]!r} is not a host, domain, IP or CIDR")
        entries.append(entry.lower())
    return tuple(entries)


def _parse_entry(entry: str) -> _Match:
    if entry == "*":
        return _Match("all")
    try:
        return _Match("net", ipaddress.ip_network(entry.strip("[]"), strict=False).compressed)
    except ValueError:
        pass
    host, port = entry, None
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif entry.count(":") == 1:
        name, _, digits = entry.partition(":")
        if digits.isdigit():
            host, port = name, int(digits)
    try:
        return _Match("net", ipaddress.ip_network(host, strict=False).compressed, port)
    except ValueError:
        pass
    host = host.removeprefix("*")
    exact = not host.startswith(".")
    return _Match("domain", host.strip(".").rstrip("."), port, exact)


@dataclass(frozen=True, repr=False)
class ProxySettings:
    """Validated proxy settings; empty (no proxy at all) by default."""

    http: str | None = None
    https: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def parse(cls, http: str = "", https: str = "", no_proxy: str = "") -> ProxySettings:
        """Settings from the three raw values (empty: unset).

        Raises:
            ProxyError: a value that is not a usable ``http://`` proxy URL or ``no_proxy`` list.
        """
        return cls(
            _proxy_url(HTTP_PROXY, http),
            _proxy_url(HTTPS_PROXY, https),
            _no_proxy_entries(no_proxy),
        )

    def __bool__(self) -> bool:
        """Whether any proxy is set."""
        return bool(self.http or self.https)

    def __repr__(self) -> str:
        """Without the proxies' credentials (this ends up in logs)."""
        http = redact(self.http) if self.http else None
        https = redact(self.https) if self.https else None
        return f"ProxySettings(http={http!r}, https={https!r}, no_proxy={self.no_proxy!r})"

    def bypasses(self, host: str, port: int | None = None) -> bool:
        """Whether ``no_proxy`` sends ``host`` (and ``port``) direct."""
        host = host.lower().strip("[]").rstrip(".")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                host
            )
        except ValueError:
            address = None
        for entry in self.no_proxy:
            match = _parse_entry(entry)
            if match.port is not None and match.port != port:
                continue
            if match.kind == "all":
                return True
            if match.kind == "net":
                if address is not None and address in ipaddress.ip_network(match.value):
                    return True
            elif match.value and (
                host.endswith("." + match.value) or (match.exact and host == match.value)
            ):
                return True
        return False

    def proxy_for(self, url: str) -> str | None:
        """The proxy to fetch ``url`` through, or None to go direct."""
        parts = urlsplit(url)
        proxy = {"http": self.http, "https": self.https}.get(parts.scheme)
        if proxy is None or not parts.hostname:
            return None
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return None  # the download itself fails on the bad port
        return None if self.bypasses(parts.hostname, port) else proxy

    def environment(self) -> dict[str, str]:
        """``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY`` for a service (only those set).

        Empty without a proxy, so a machine without proxies gets no extra environment.
        """
        if not self:
            return {}
        env = {}
        if self.http:
            env["HTTP_PROXY"] = self.http
        if self.https:
            env["HTTPS_PROXY"] = self.https
        if self.no_proxy:
            env["NO_PROXY"] = ",".join(self.no_proxy)
        return env


def juju_proxy_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The three raw values as the hook got them (unset: empty), e.g. to notice a change."""
    env = os.environ if environ is None else environ
    return {name: env.get(name, "") for name in (HTTP_PROXY, HTTPS_PROXY, NO_PROXY)}


def proxy_settings(environ: Mapping[str, str] | None = None) -> ProxySettings:
    """The model's proxy settings from the hook environment (``os.environ`` by default).

    Raises:
        ProxyError: a setting that cannot be used, naming its model config key.
    """
    values = juju_proxy_values(environ)
    return ProxySettings.parse(values[HTTP_PROXY], values[HTTPS_PROXY], values[NO_PROXY])

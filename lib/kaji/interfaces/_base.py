"""Encoding, decoding and validation shared by every kaji relation interface.

Convention: every field lives under its own kebab-case key and its value is JSON (strings
too), so a missing key, malformed JSON or a value of the wrong type is always detectable.
Juju's own keys (``ingress-address``, ``egress-subnets``, ``private-address``) are ignored
when reading and never written. Private keys never cross a relation: writing or reading any
value that contains ``PRIVATE KEY`` raises :class:`RelationDataError`.

Nothing here imports ``ops`` or ``cryptography`` at module level: databags are plain
``Mapping[str, str]`` (what ``relation.data[x]`` is) and :mod:`kaji.pki` is imported only
inside the functions that check PEM blocks.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from kaji import pki
    from kaji.pki import CertificateInfo, Identity
else:
    pki = lazy_import("kaji.pki")  # cryptography only when a PEM is checked

JUJU_KEYS = frozenset({"ingress-address", "egress-subnets", "private-address"})
"""Keys Juju writes into unit databags itself; ignored when reading, refused when writing."""

MAX_PEM_BYTES = 16 * 1024
"""Largest PEM block (CSR or certificate) accepted in relation data."""

MAX_VALUE_BYTES = 64 * 1024
"""Largest encoded value of an ordinary field."""

MAX_DATABAG_BYTES = 1024 * 1024
"""Largest databag (keys plus values). Per-unit maps (certificates, subnet allocations) are
bounded only by this, since they grow with the number of units (about 1 KiB per unit)."""

PRIVATE_KEY_MARKER = "PRIVATE KEY"

_KEY = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_UNIT_NAME = re.compile(r"([a-z][a-z0-9]*(?:-[a-z0-9]+)*)/(0|[1-9][0-9]{0,8})")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_PEM_BLOCK = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\n[A-Za-z0-9+/=\n]+-----END (?P=label)-----\n?"
)

T = TypeVar("T")


class RelationDataError(ValueError):
    """Relation data is malformed or violates the interface; the message names the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"relation data {key!r}: {reason}")
        self.key = key
        self.reason = reason


# --- sizes and the private-key guard ------------------------------------------------------------


def byte_size(text: str) -> int:
    """UTF-8 size of `text`, counting lone surrogates instead of failing on them."""
    return len(text.encode("utf-8", "surrogatepass"))


def guard_private_key(key: str, text: str) -> None:
    """Refuse any text that carries a private key.

    Raises:
        RelationDataError: `text` contains ``PRIVATE KEY``.
    """
    if PRIVATE_KEY_MARKER in text:
        raise RelationDataError(key, "contains a private key; private keys never cross relations")


# --- writing -----------------------------------------------------------------------------------


def encode(fields: Mapping[str, object], *, unbounded: Iterable[str] = ()) -> dict[str, str]:
    """JSON-encode each field under its kebab-case key; fields whose value is None are left out.

    Args:
        fields: key -> JSON-serialisable value.
        unbounded: keys exempt from MAX_VALUE_BYTES (per-unit maps); the databag limit holds.

    Raises:
        RelationDataError: a bad key, a value that is not JSON-serialisable, too large, or
            carrying a private key.
    """
    exempt = frozenset(unbounded)
    bag: dict[str, str] = {}
    total = 0
    for key, value in fields.items():
        if value is None:
            continue
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key in JUJU_KEYS:
            raise RelationDataError(str(key), "not a kebab-case key this library may write")
        try:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise RelationDataError(key, f"not JSON-serialisable: {error}") from error
        guard_private_key(key, text)
        size = byte_size(text)
        if key not in exempt and size > MAX_VALUE_BYTES:
            raise RelationDataError(key, f"value is {size} bytes, over {MAX_VALUE_BYTES}")
        total += size + len(key)
        bag[key] = text
    if total > MAX_DATABAG_BYTES:
        raise RelationDataError("*", f"databag is {total} bytes, over {MAX_DATABAG_BYTES}")
    return bag


def update_databag(databag: MutableMapping[str, str], new: Mapping[str, str]) -> bool:
    """Make `databag` hold exactly `new` plus Juju's own keys, writing only what changed.

    Returns:
        True when anything was written or removed.
    """
    changed = False
    for key in [k for k in databag if k not in JUJU_KEYS and k not in new]:
        del databag[key]
        changed = True
    for key, value in new.items():
        if key in JUJU_KEYS:
            raise RelationDataError(key, "Juju's own key; never written by a charm")
        if databag.get(key) != value:
            databag[key] = value
            changed = True
    return changed


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Relation data a unit ignored: whose (``sender``), what (``what``), which key and why."""

    sender: str
    what: str
    key: str
    reason: str

    def message(self, limit: int = 200) -> str:
        """For status and log: ``refusing worker/3's node data: node-name: ...``."""
        text = f"refusing {self.sender}'s {self.what}: {self.key}: {self.reason}"
        return text if len(text) <= limit else f"{text[: limit - 3]}..."


def read_or_refuse(
    read: Callable[[Mapping[str, str]], T],
    databag: Mapping[str, str],
    *,
    sender: str,
    what: str,
    log: logging.Logger,
) -> T | Refusal:
    """``read(databag)``, or the :class:`Refusal` (logged) when the data is malformed.

    The one way a kaji charm ignores malformed relation data: it never raises, and what it
    returns names the sender and the key for the unit's status.
    """
    try:
        return read(databag)
    except RelationDataError as exc:
        refusal = Refusal(sender, what, exc.key, exc.reason)
        log.warning("%s", refusal.message(limit=2000))
        return refusal


def juju_addresses(databag: Mapping[str, str]) -> frozenset[str]:
    """The IP addresses Juju itself put in a unit databag (ingress/private address), normalised.

    Unparseable values are skipped: these keys are Juju's, not part of any kaji interface.
    """
    found = set()
    for key in ("ingress-address", "private-address"):
        value = databag.get(key)
        if isinstance(value, str):
            try:
                found.add(ipaddress.ip_address(value.strip()).compressed)
            except ValueError:
                continue
    return frozenset(found)


class Fields:
    """The decoded view of one databag: Juju keys dropped, sizes and private keys checked."""

    def __init__(self, databag: Mapping[str, str], *, unbounded: Iterable[str] = ()) -> None:
        """Check the raw databag; decoding of each field happens on access.

        Raises:
            RelationDataError: not a mapping of strings, too large, or a private key inside.
        """
        if not isinstance(databag, Mapping):
            raise RelationDataError("*", f"databag is a {type(databag).__name__}, not a mapping")
        exempt = frozenset(unbounded)
        raw: dict[str, str] = {}
        total = 0
        for key, value in databag.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise RelationDataError(str(key), "databag keys and values must be strings")
            if key in JUJU_KEYS:
                continue
            guard_private_key(key, value)
            size = byte_size(value)
            if key not in exempt and size > MAX_VALUE_BYTES:
                raise RelationDataError(key, f"value is {size} bytes, over {MAX_VALUE_BYTES}")
            total += size + byte_size(key)
            raw[key] = value
        if total > MAX_DATABAG_BYTES:
            raise RelationDataError("*", f"databag is {total} bytes, over {MAX_DATABAG_BYTES}")
        self.raw = raw

    def __bool__(self) -> bool:
        """False for a databag with nothing but Juju's keys: "not ready yet"."""
        return bool(self.raw)

    def optional(self, key: str) -> Any:
        """The decoded JSON value of `key`, or None when the key is absent."""
        text = self.raw.get(key)
        if text is None:
            return None
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as error:
            raise RelationDataError(key, f"not valid JSON: {_short(error)}") from error

    def required(self, key: str) -> Any:
        """The decoded JSON value of `key`; RelationDataError when absent or null."""
        value = self.optional(key)
        if value is None:
            raise RelationDataError(key, "missing")
        return value

    def string(self, key: str) -> str:
        """A required JSON string."""
        return expect_str(key, self.required(key))

    def optional_string(self, key: str) -> str | None:
        """An optional JSON string (absent or null -> None)."""
        value = self.optional(key)
        return None if value is None else expect_str(key, value)

    def string_list(self, key: str) -> list[str]:
        """A required JSON list of strings."""
        return expect_str_list(key, self.required(key))

    def string_map(self, key: str) -> dict[str, str]:
        """A required JSON object whose values are strings."""
        return expect_str_map(key, self.required(key))


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."


# --- type expectations -------------------------------------------------------------------------


def expect_str(key: str, value: object) -> str:
    """`value` must be a str."""
    if not isinstance(value, str):
        raise RelationDataError(key, f"expected a string, got {type(value).__name__}")
    return value


def expect_str_list(key: str, value: object) -> list[str]:
    """`value` must be a list of str."""
    if not isinstance(value, list):
        raise RelationDataError(key, f"expected a list, got {type(value).__name__}")
    return [expect_str(key, item) for item in value]


def expect_str_map(key: str, value: object) -> dict[str, str]:
    """`value` must be a dict of str -> str."""
    if not isinstance(value, dict):
        raise RelationDataError(key, f"expected an object, got {type(value).__name__}")
    return {k: expect_str(f"{key}[{str(k)[:100]}]", v) for k, v in value.items()}


def expect_map(key: str, value: object) -> dict[str, Any]:
    """`value` must be a JSON object (dict)."""
    if not isinstance(value, dict):
        raise RelationDataError(key, f"expected an object, got {type(value).__name__}")
    return value


# --- value validators (each returns the normalised value) --------------------------------------


def check_unit_name(key: str, value: str) -> str:
    """A Juju unit name, ``app/N``."""
    if len(value) > 140 or not _UNIT_NAME.fullmatch(value):
        raise RelationDataError(key, f"not a unit name (app/N): {value[:100]!r}")
    return value


def check_dns_subdomain(key: str, value: str) -> str:
    """A DNS-1123 subdomain (lowercase, at most 253 characters), as Kubernetes node names are."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise RelationDataError(key, f"not a DNS-1123 subdomain: {value[:100]!r}")
    return value


def check_ip(key: str, value: str) -> str:
    """An IPv4 or IPv6 address; returned in compressed form."""
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError as error:
        raise RelationDataError(key, f"not an IP address: {value[:100]!r}") from error


def check_ips(key: str, values: Iterable[str], *, allow_empty: bool = False) -> tuple[str, ...]:
    """A list of distinct IP addresses, normalised and sorted."""
    found = sorted({check_ip(key, v) for v in values})
    if not found and not allow_empty:
        raise RelationDataError(key, "expected at least one IP address")
    return tuple(found)


def check_cidr(key: str, value: str) -> str:
    """A network in CIDR form with no host bits set; returned normalised."""
    try:
        return ipaddress.ip_network(value, strict=True).compressed
    except ValueError as error:
        raise RelationDataError(key, f"not a CIDR network: {value[:100]!r}") from error


def network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse an already-validated CIDR."""
    return ipaddress.ip_network(value)


def check_host_in(key: str, address: str, cidr: str) -> str:
    """`address` must be a usable host address (not network/broadcast) of the network `cidr`."""
    ip = ipaddress.ip_address(check_ip(key, address))
    net = network(cidr)
    if ip not in net or (
        net.num_addresses > 2 and ip in (net.network_address, net.broadcast_address)
    ):
        raise RelationDataError(key, f"{ip} is not a host address of {cidr}")
    return ip.compressed


def check_subnet_of(key: str, subnet: str, cidr: str) -> str:
    """`subnet` must be a network inside the network `cidr` (same IP version)."""
    inner, outer = network(check_cidr(key, subnet)), network(cidr)
    if inner.version != outer.version or not inner.subnet_of(outer):  # type: ignore[arg-type]
        raise RelationDataError(key, f"{inner} is not inside {cidr}")
    return inner.compressed


def check_url(key: str, value: str, *, https: bool = True) -> str:
    """An absolute URL with a host (https only when `https`), no credentials, query or fragment.

    Returns the URL with a trailing slash removed, so equal endpoints compare equal.
    """
    schemes = ("https",) if https else ("http", "https")
    try:
        parts = urlsplit(value)
        port = parts.port
        host = parts.hostname
    except ValueError as error:
        raise RelationDataError(key, f"not a URL: {value[:100]!r}") from error
    if parts.scheme not in schemes:
        raise RelationDataError(key, f"scheme must be {' or '.join(schemes)}: {value[:100]!r}")
    if not host or parts.username is not None or parts.password is not None:
        raise RelationDataError(key, f"URL needs a host and no credentials: {value[:100]!r}")
    if parts.query or parts.fragment or not value.isprintable() or " " in value:
        raise RelationDataError(key, f"URL must not carry a query or fragment: {value[:100]!r}")
    if port == 0:
        raise RelationDataError(key, f"URL port 0: {value[:100]!r}")
    return value.rstrip("/")


def url_host(url: str) -> str:
    """The host of an already-validated URL (IP addresses in compressed form)."""
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def check_urls(key: str, values: Iterable[str], *, https: bool = True) -> tuple[str, ...]:
    """A non-empty list of URLs, deduplicated and sorted."""
    found = sorted({check_url(key, v, https=https) for v in values})
    if not found:
        raise RelationDataError(key, "expected at least one URL")
    return tuple(found)


def check_absolute_path(key: str, value: str) -> str:
    """An absolute, normalised POSIX path."""
    if (
        not value.startswith("/")
        or "\x00" in value
        or not value.isprintable()
        or posixpath.normpath(value) != value
        or len(value) > 4096
    ):
        raise RelationDataError(key, f"not an absolute normalised path: {value[:100]!r}")
    return value


def _pem_text(key: str, value: str, label: str) -> str:
    if byte_size(value) > MAX_PEM_BYTES:
        raise RelationDataError(key, f"PEM block over {MAX_PEM_BYTES} bytes")
    if not value.isascii():
        raise RelationDataError(key, "PEM must be ASCII")
    guard_private_key(key, value)
    match = _PEM_BLOCK.fullmatch(value.strip() + "\n")
    if match is None or match.group("label") != label:
        raise RelationDataError(key, f"not a single PEM {label} block")
    return value


def check_csr(key: str, value: str, expected: Identity | None = None) -> Identity:
    """A PEM CSR readable by kaji.pki; when `expected` is given its identity must equal it.

    Returns:
        The identity the CSR asks for.
    """
    _pem_text(key, value, "CERTIFICATE REQUEST")

    try:
        if expected is None:
            return pki.read_csr(value)
        return pki.check_csr(value, expected)
    except pki.PKIError as error:
        raise RelationDataError(key, str(error)) from error


def check_certificate(key: str, value: str, *, ca: bool | None = None) -> CertificateInfo:
    """A PEM certificate readable by kaji.pki; `ca` True/False insists on the CA flag."""
    _pem_text(key, value, "CERTIFICATE")

    try:
        info = pki.read_certificate(value)
    except pki.PKIError as error:
        raise RelationDataError(key, str(error)) from error
    if ca is not None and info.is_ca != ca:
        raise RelationDataError(key, "expected a CA certificate" if ca else "is a CA certificate")
    return info


def check_unit_map(key: str, value: Mapping[str, T]) -> dict[str, T]:
    """A mapping keyed by unit name; returned as a dict sorted by unit name."""
    for unit in value:
        check_unit_name(f"{key}[{unit[:100]}]", unit)
    return dict(sorted(value.items()))

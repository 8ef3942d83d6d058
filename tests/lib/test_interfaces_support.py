"""Shared helpers for the interface tests: cached keys/CSRs/certs and malformed-databag strategies.

Named test_interfaces_* so it lives with the tests it serves; it holds one sanity test.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from kaji import pki
from kaji.interfaces import RelationDataError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # leave no .hypothesis directory behind
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

JUJU_BAG = {
    "ingress-address": "10.0.0.9",
    "egress-subnets": "10.0.0.9/32",
    "private-address": "10.0.0.9",
}


@functools.cache
def private_key() -> str:
    """One ECDSA key for every CSR the tests make (its identity is in the CSR, not the key)."""
    return pki.generate_private_key()


@functools.cache
def ca(name: str = "kaji-test-ca") -> pki.CertificateAuthority:
    return pki.create_ca(name)


@functools.cache
def csr_for(identity: pki.Identity) -> str:
    return pki.create_csr(private_key(), identity)


@functools.cache
def cert_for(identity: pki.Identity, profile: pki.Profile = pki.Profile.PEER) -> str:
    return pki.sign_csr(csr_for(identity), ca(), profile)


def identity(
    cn: str, o: Sequence[str] = (), dns: Sequence[str] = (), ips: Sequence[str] = ()
) -> pki.Identity:
    return pki.Identity.of(cn, organizations=o, dns_names=dns, ip_addresses=ips)


GARBAGE_PEM = st.builds(
    lambda label, body: f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n",
    st.sampled_from(["CERTIFICATE", "CERTIFICATE REQUEST", "PUBLIC KEY", "X"]),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=\n", max_size=300),
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def random_databags(keys: Sequence[str]) -> st.SearchStrategy[dict[str, str]]:
    """Random dicts of text, biased towards the interface's own keys and JSON values."""
    key = st.sampled_from([*keys, *JUJU_BAG]) | st.text(max_size=20)
    value = st.text(max_size=200) | JSON_VALUES.map(json.dumps)
    return st.dictionaries(key, value, max_size=len(keys) + 3)


def mutated_databags(
    valid: Mapping[str, str], pems: Sequence[str] = ()
) -> st.SearchStrategy[dict[str, str]]:
    """Valid databags with one to three things broken (or, rarely, nothing that matters)."""
    keys = sorted(valid)
    oversized = json.dumps("A" * (70 * 1024))
    replacement = st.one_of(
        JSON_VALUES.map(json.dumps),  # wrong JSON types
        st.text(max_size=100),  # usually not JSON at all
        GARBAGE_PEM.map(json.dumps),
        st.just(oversized),
        st.just(json.dumps("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")),
        st.just(json.dumps("http://10.0.0.1:2379")),
        st.just(json.dumps(["http://10.0.0.1:2379"])),
        st.just("[" * 5000),
        st.just(json.dumps({"x/0": "10.1.0.0/16", "y/0": "10.1.1.0/24"})),
        *([st.sampled_from(list(pems)).map(json.dumps)] if pems else []),
    )

    def apply(bag: dict[str, str], edits: list[tuple[str, str | None]]) -> dict[str, str]:
        bag = dict(bag)
        for key, value in edits:
            if value is None:
                bag.pop(key, None)
            else:
                bag[key] = value
        return bag

    edit = st.tuples(st.sampled_from(keys), st.none() | replacement)
    return st.builds(apply, st.just(dict(valid)), st.lists(edit, min_size=1, max_size=3))


def read_safely(reader: Callable[[Mapping[str, str]], Any], databag: Mapping[str, str]) -> Any:
    """Call `reader`; RelationDataError is an allowed outcome (returned), anything else escapes."""
    try:
        return reader(databag)
    except RelationDataError as error:
        refused = error
    assert str(refused).startswith("relation data ")
    return refused


def test_support_material_is_consistent() -> None:
    ident = identity("x/0", o=["kaji:test"])
    assert pki.read_csr(csr_for(ident)) == ident
    info = pki.read_certificate(cert_for(ident))
    assert info.identity == ident
    assert not info.is_ca

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_interfaces_support import (
    FUZZ,
    JUJU_BAG,
    ca,
    cert_for,
    csr_for,
    identity,
    private_key,
)

from kaji import pki
from kaji.interfaces import (
    JUJU_KEYS,
    MAX_DATABAG_BYTES,
    MAX_PEM_BYTES,
    MAX_VALUE_BYTES,
    RelationDataError,
    juju_addresses,
    update_databag,
)
from kaji.interfaces import _base as base

LIB = Path(__file__).resolve().parents[2] / "lib"


def test_importing_interfaces_loads_neither_cryptography_nor_ops() -> None:
    code = (
        "import sys\n"
        "import kaji.interfaces, kaji.interfaces.etcd, kaji.interfaces.kube_control\n"
        "import kaji.interfaces.cni, kaji.interfaces.etcd_peers\n"
        "import kaji.interfaces.control_plane_peers, kaji.interfaces.cni_network\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('cryptography', 'ops', 'yaml')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(LIB)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


# --- encoding ------------------------------------------------------------------------------------


def test_encode_json_encodes_every_value_and_skips_none() -> None:
    bag = base.encode({"a-name": "x", "some-list": ["b", "a"], "count": 3, "gone": None})
    assert bag == {"a-name": '"x"', "some-list": '["b","a"]', "count": "3"}


def test_encode_is_deterministic_for_maps() -> None:
    assert base.encode({"m": {"b": "1", "a": "2"}}) == base.encode({"m": {"a": "2", "b": "1"}})
    assert base.encode({"m": {"b": "1", "a": "2"}})["m"] == '{"a":"2","b":"1"}'


@pytest.mark.parametrize("key", ["ingress-address", "private-address", "Bad", "x_y", "-x", ""])
def test_encode_refuses_juju_and_non_kebab_keys(key: str) -> None:
    with pytest.raises(RelationDataError):
        base.encode({key: "v"})


def test_encode_refuses_values_that_are_not_json() -> None:
    with pytest.raises(RelationDataError, match="not JSON"):
        base.encode({"k": {1, 2}})
    with pytest.raises(RelationDataError, match="not JSON"):
        base.encode({"k": float("nan")})


def test_private_key_guard_on_write_names_the_key() -> None:
    with pytest.raises(RelationDataError, match=r"'leak'.*private key"):
        base.encode({"leak": private_key()})
    with pytest.raises(RelationDataError, match="private key"):
        base.encode({"nested": {"x/0": ["-----BEGIN EC PRIVATE KEY-----"]}})


def test_private_key_guard_on_read() -> None:
    with pytest.raises(RelationDataError, match="private key"):
        base.Fields({"ca-cert": json.dumps(private_key())})


def test_value_size_limit_and_unbounded_exemption() -> None:
    big = "x" * MAX_VALUE_BYTES
    with pytest.raises(RelationDataError, match="over"):
        base.encode({"k": big})
    assert base.encode({"k": big}, unbounded=["k"])["k"] == json.dumps(big)
    with pytest.raises(RelationDataError, match="over"):
        base.Fields({"k": json.dumps(big)})
    assert base.Fields({"k": json.dumps(big)}, unbounded=["k"]).string("k") == big


def test_databag_size_limit() -> None:
    chunk = "x" * (MAX_VALUE_BYTES - 10)
    fields = {f"k{i}": chunk for i in range(MAX_DATABAG_BYTES // MAX_VALUE_BYTES + 1)}
    with pytest.raises(RelationDataError, match="databag"):
        base.encode(fields)
    with pytest.raises(RelationDataError, match="databag"):
        base.Fields({k: json.dumps(v) for k, v in fields.items()})


# --- reading ------------------------------------------------------------------------------------


def test_juju_keys_are_ignored_and_an_empty_bag_is_falsy() -> None:
    assert set(JUJU_BAG) == JUJU_KEYS
    assert not base.Fields({})
    assert not base.Fields(JUJU_BAG)
    fields = base.Fields({**JUJU_BAG, "k": '"v"'})
    assert fields
    assert fields.raw == {"k": '"v"'}


def test_fields_typed_access() -> None:
    fields = base.Fields({"s": '"v"', "l": '["a"]', "m": '{"a":"b"}', "n": "null", "i": "1"})
    assert fields.string("s") == "v"
    assert fields.optional_string("absent") is None
    assert fields.optional_string("n") is None
    assert fields.string_list("l") == ["a"]
    assert fields.string_map("m") == {"a": "b"}
    with pytest.raises(RelationDataError, match="'absent': missing"):
        fields.string("absent")
    with pytest.raises(RelationDataError, match="'i': expected a string, got int"):
        fields.string("i")
    with pytest.raises(RelationDataError, match="'s': expected a list"):
        fields.string_list("s")
    with pytest.raises(RelationDataError, match="expected an object"):
        fields.string_map("l")


@pytest.mark.parametrize("text", ["v", "{", "NaN", "Infinity", "[" * 100_000, "1" * 5000, ""])
def test_malformed_json_is_a_relation_data_error(text: str) -> None:
    with pytest.raises(RelationDataError, match="'k'"):
        base.Fields({"k": text}, unbounded=["k"]).required("k")


def test_non_string_databag_values_are_refused() -> None:
    with pytest.raises(RelationDataError):
        base.Fields(cast(Any, {"k": 1}))
    with pytest.raises(RelationDataError):
        base.Fields(cast(Any, ["k"]))


def test_update_databag_writes_only_changes_and_keeps_juju_keys() -> None:
    bag = {**JUJU_BAG, "old": '"x"', "same": '"y"'}
    assert update_databag(bag, {"same": '"y"', "new": '"z"'})
    assert bag == {**JUJU_BAG, "same": '"y"', "new": '"z"'}
    assert not update_databag(bag, {"same": '"y"', "new": '"z"'})
    with pytest.raises(RelationDataError):
        update_databag(bag, {"ingress-address": "1.2.3.4"})


def test_juju_addresses() -> None:
    assert juju_addresses(JUJU_BAG) == {"10.0.0.9"}
    bag = {"ingress-address": "fd00:0::1", "private-address": "10.0.0.2"}
    assert juju_addresses(bag) == {"fd00::1", "10.0.0.2"}
    assert juju_addresses({"ingress-address": "not-an-ip"}) == frozenset()


# --- validators ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:2379",
        "https://",
        "https://user:pw@10.0.0.1",
        "https://10.0.0.1/?q=1",
        "https://10.0.0.1#f",
        "https://10.0.0.1:99999",
        "https://[::1",
        "ftp://x",
        "10.0.0.1:2379",
        "https://10.0.0.1 /x",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(RelationDataError, match="'u'"):
        base.check_url("u", url)


def test_good_urls_are_normalised() -> None:
    assert base.check_url("u", "https://10.0.0.1:6443/") == "https://10.0.0.1:6443"
    assert base.check_url("u", "http://h:80", https=False) == "http://h:80"
    assert base.url_host("https://[fd00:0::1]:2379") == "fd00::1"
    assert base.check_urls("u", ["https://b", "https://a", "https://a/"]) == (
        "https://a",
        "https://b",
    )
    with pytest.raises(RelationDataError):
        base.check_urls("u", [])


def test_ips_and_cidrs() -> None:
    assert base.check_ips("a", ["10.0.0.2", "fd00:0::1", "10.0.0.2"]) == ("10.0.0.2", "fd00::1")
    with pytest.raises(RelationDataError):
        base.check_ips("a", [])
    assert base.check_ips("a", [], allow_empty=True) == ()
    with pytest.raises(RelationDataError):
        base.check_ip("a", "10.0.0.256")
    assert base.check_cidr("c", "10.1.0.0/16") == "10.1.0.0/16"
    with pytest.raises(RelationDataError, match="not a CIDR"):
        base.check_cidr("c", "10.1.0.1/16")  # host bits set
    assert base.check_host_in("d", "10.152.183.10", "10.152.183.0/24") == "10.152.183.10"
    for bad in ("10.152.183.0", "10.152.183.255", "10.0.0.1", "fd00::1"):
        with pytest.raises(RelationDataError, match="'d'"):
            base.check_host_in("d", bad, "10.152.183.0/24")
    assert base.check_subnet_of("s", "10.1.2.0/24", "10.1.0.0/16") == "10.1.2.0/24"
    for bad in ("10.2.0.0/24", "10.0.0.0/8", "fd00::/64"):
        with pytest.raises(RelationDataError, match="'s'"):
            base.check_subnet_of("s", bad, "10.1.0.0/16")


@pytest.mark.parametrize("name", ["etcd/0", "control-plane/12", "a1-b2/3"])
def test_unit_names(name: str) -> None:
    assert base.check_unit_name("u", name) == name


@pytest.mark.parametrize(
    "name", ["etcd", "etcd/", "etcd/01", "Etcd/0", "1etcd/0", "a--b/0", "a/0/1"]
)
def test_bad_unit_names(name: str) -> None:
    with pytest.raises(RelationDataError):
        base.check_unit_name("u", name)


def test_dns_subdomains_and_paths() -> None:
    assert base.check_dns_subdomain("n", "node-1.example.com") == "node-1.example.com"
    for bad in ("Node", "-x", "x-", "a..b", "", "a" * 64, "x_y"):
        with pytest.raises(RelationDataError):
            base.check_dns_subdomain("n", bad)
    assert base.check_absolute_path("p", "/etc/cni/net.d") == "/etc/cni/net.d"
    for bad in ("etc/cni", "/etc/../x", "/etc/cni/", "/a\x00b", ""):
        with pytest.raises(RelationDataError):
            base.check_absolute_path("p", bad)


def test_pem_checks_use_pki_and_convert_its_errors() -> None:
    who = identity("x/0", o=["o"])
    assert base.check_csr("c", csr_for(who)) == who
    assert base.check_csr("c", csr_for(who), who) == who
    with pytest.raises(RelationDataError, match=r"'c'.*common name"):
        base.check_csr("c", csr_for(who), identity("y/0", o=["o"]))
    with pytest.raises(RelationDataError, match="single PEM CERTIFICATE REQUEST"):
        base.check_csr("c", cert_for(who))
    broken = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(RelationDataError, match="'c'"):
        base.check_csr("c", broken)
    with pytest.raises(RelationDataError, match="over"):
        base.check_csr("c", "A" * (MAX_PEM_BYTES + 1))
    assert base.check_certificate("k", cert_for(who)).identity == who
    assert base.check_certificate("k", ca().cert_pem, ca=True).is_ca
    with pytest.raises(RelationDataError, match="expected a CA"):
        base.check_certificate("k", cert_for(who), ca=True)
    with pytest.raises(RelationDataError, match="is a CA"):
        base.check_certificate("k", ca().cert_pem, ca=False)
    with pytest.raises(RelationDataError, match="ASCII"):
        base.check_certificate("k", cert_for(who).replace("A", "\u00c4", 1))
    with pytest.raises(RelationDataError, match="private key"):
        base.check_certificate("k", ca().key_pem)


def test_a_pem_followed_by_a_second_block_is_refused() -> None:
    two = cert_for(identity("x/0")) + ca().cert_pem
    with pytest.raises(RelationDataError, match="single PEM"):
        base.check_certificate("k", two)


def test_relation_data_error_is_a_value_error_naming_key_and_reason() -> None:
    assert issubclass(RelationDataError, ValueError)
    error = RelationDataError("client-urls", "scheme must be https")
    assert error.key == "client-urls"
    assert str(error) == "relation data 'client-urls': scheme must be https"
    assert issubclass(pki.PKIError, ValueError)


@FUZZ
@given(st.text(max_size=300))
def test_validators_raise_only_relation_data_error(text: str) -> None:
    for check in (
        base.check_url,
        base.check_ip,
        base.check_cidr,
        base.check_unit_name,
        base.check_dns_subdomain,
        base.check_absolute_path,
        base.check_csr,
        base.check_certificate,
    ):
        with contextlib.suppress(RelationDataError):
            check("k", text)


def test_interface_names_match_the_charms_metadata() -> None:
    import yaml

    from kaji.interfaces import (
        cni,
        cni_network,
        control_plane_peers,
        etcd,
        etcd_peers,
        kube_control,
    )

    declared: dict[str, set[str]] = {}
    for path in sorted((LIB.parent / "charms").glob("*/charmcraft.yaml")):
        meta = yaml.safe_load(path.read_text())
        for role in ("provides", "requires", "peers"):
            for endpoint, spec in (meta.get(role) or {}).items():
                declared.setdefault(spec["interface"], set()).add(f"{path.parent.name}:{endpoint}")
    assert declared[etcd.INTERFACE] == {"etcd:db", "control-plane:etcd"}
    assert declared[kube_control.INTERFACE] == {
        "control-plane:kube-control",
        "worker:kube-control",
    }
    assert declared[cni.INTERFACE] == {"cni:cni", "control-plane:cni", "worker:cni"}
    assert declared[etcd_peers.INTERFACE] == {f"etcd:{etcd_peers.RELATION}"}
    assert declared[control_plane_peers.INTERFACE] == {
        f"control-plane:{control_plane_peers.RELATION}"
    }
    assert declared[cni_network.INTERFACE] == {f"cni:{cni_network.RELATION}"}

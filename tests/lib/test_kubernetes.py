"""kaji.kubernetes: versions, flag knowledge, extra args, networks, images, release URLs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaji import kubernetes as k8s

# ----------------------------------------------------------------------------- versions


def test_parse_version_accepts_plain_and_v_prefixed() -> None:
    assert k8s.KubernetesVersion.parse("1.32.3") == k8s.KubernetesVersion(1, 32, 3)
    assert k8s.KubernetesVersion.parse("v1.30.0").tag == "v1.30.0"
    assert str(k8s.KubernetesVersion.parse(" 1.33.1 ")) == "1.33.1"


@pytest.mark.parametrize("text", ["1.32", "1.32.3.4", "latest", "", "1.032.3", "1.32.x"])
def test_parse_version_refuses_malformed(text: str) -> None:
    with pytest.raises(k8s.UnsupportedVersionError, match="not a version"):
        k8s.KubernetesVersion.parse(text)


def test_versions_order_numerically() -> None:
    assert k8s.KubernetesVersion.parse("1.9.0") < k8s.KubernetesVersion.parse("1.10.0")


def test_check_version_accepts_every_supported_minor_and_the_default() -> None:
    for minor in k8s.supported_versions():
        assert k8s.check_version(f"{minor}.0").minor_version in k8s.SUPPORTED_MINORS
    assert str(k8s.check_version(k8s.DEFAULT_VERSION)) == "1.32.3"


@pytest.mark.parametrize("text", ["1.29.9", "1.34.0", "2.0.0"])
def test_check_version_refuses_unsupported_and_lists_supported(text: str) -> None:
    with pytest.raises(k8s.UnsupportedVersionError, match=r"supported: 1\.30, .*1\.33"):
        k8s.check_version(text)


def test_every_supported_minor_has_a_coredns_version() -> None:
    assert set(k8s.COREDNS_VERSIONS) == set(k8s.SUPPORTED_MINORS)


# ----------------------------------------------------------------------------- flags


def test_flag_reference_url_is_the_versioned_docs_page() -> None:
    assert k8s.flag_reference_url("kube-apiserver", "1.32.3") == (
        "https://v1-32.docs.kubernetes.io/docs/reference/command-line-tools-reference/"
        "kube-apiserver/"
    )
    assert set(k8s.FLAG_REFERENCE) == set(k8s.COMPONENTS)


def test_known_flags_hold_the_essentials_of_each_component() -> None:
    essentials = {
        "kube-apiserver": {
            "etcd-servers",
            "service-account-issuer",
            "encryption-provider-config",
            "enable-admission-plugins",
            "anonymous-auth",
            "requestheader-client-ca-file",
            "v",
        },
        "kube-controller-manager": {"leader-elect", "cluster-cidr", "allocate-node-cidrs"},
        "kube-scheduler": {"leader-elect", "authentication-kubeconfig", "config"},
        "kubelet": {"config", "kubeconfig", "node-ip", "container-runtime-endpoint"},
        "kube-proxy": {"config", "kubeconfig", "hostname-override", "cluster-cidr"},
    }
    for component, flags in essentials.items():
        assert flags <= k8s.known_flags(component, "1.32.3"), component


def test_removed_flag_is_not_known_from_its_removal_on() -> None:
    assert "keep-terminated-pod-volumes" not in k8s.removed_flags("kubelet", "1.30.0")
    assert "keep-terminated-pod-volumes" in k8s.removed_flags("kubelet", "1.31.0")
    assert "container-runtime" in k8s.removed_flags("kubelet", "1.30.0")
    assert "insecure-port" not in k8s.known_flags("kube-apiserver", "1.33.0")


def test_known_and_removed_never_overlap() -> None:
    for component in k8s.COMPONENTS:
        for minor in k8s.supported_versions():
            version = f"{minor}.0"
            assert not k8s.known_flags(component, version) & k8s.removed_flags(component, version)


def test_unknown_flags_strips_dashes_and_reports_sorted() -> None:
    names = ["--v", "--bogus-flag", "etcd-servers", "--another-bogus", "--bogus-flag"]
    assert k8s.unknown_flags("kube-apiserver", "1.32.3", names) == [
        "another-bogus",
        "bogus-flag",
    ]


def test_argv_flags_takes_names_of_double_dash_items() -> None:
    argv = ["/usr/bin/kube-apiserver", "--v=2", "--allow-privileged", "--a=b=c", "positional"]
    assert k8s.argv_flags(argv) == ["v", "allow-privileged", "a"]


def test_unknown_component_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown component"):
        k8s.known_flags("kube-foo", "1.32.3")


# ----------------------------------------------------------------------------- extra args


def test_parse_extra_args_forms() -> None:
    assert k8s.parse_extra_args("v=2 --profiling=false enable-aggregator-routing") == {
        "v": "2",
        "profiling": "false",
        "enable-aggregator-routing": "true",
    }
    assert k8s.parse_extra_args("feature-gates=A=true,B=false") == {
        "feature-gates": "A=true,B=false"
    }
    assert k8s.parse_extra_args("'tls-cipher-suites=a b'") == {"tls-cipher-suites": "a b"}
    assert k8s.parse_extra_args("") == {}
    assert k8s.parse_extra_args("  ") == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("'unbalanced", "cannot parse"),
        ("=2", "not name=value"),
        ("--=x", "not name=value"),
        ("V=2", "not name=value"),
        ("bad_name=1", "not name=value"),
        ("v=1 v=2", "given twice"),
        ("'v=1\n2'", "control characters"),
    ],
)
def test_parse_extra_args_refuses_malformed(text: str, reason: str) -> None:
    with pytest.raises(k8s.ExtraArgsError, match=reason):
        k8s.parse_extra_args(text)


def test_check_extra_args_refuses_removed_flags_for_the_version() -> None:
    assert k8s.check_extra_args("kubelet", "1.30.0", "keep-terminated-pod-volumes") == {
        "keep-terminated-pod-volumes": "true"
    }
    with pytest.raises(k8s.ExtraArgsError, match="--keep-terminated-pod-volumes no longer"):
        k8s.check_extra_args("kubelet", "1.31.0", "keep-terminated-pod-volumes=true")


def test_merge_args_extra_wins_and_appends() -> None:
    merged = k8s.merge_args({"v": "0", "a": "1"}, {"v": "4", "z": "9"})
    assert merged == {"v": "4", "a": "1", "z": "9"}
    assert list(merged) == ["v", "a", "z"]
    assert k8s.render_args(merged) == ["--v=4", "--a=1", "--z=9"]


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
        max_size=6,
    )
)
def test_extra_args_round_trip_through_shell_quoting(flags: dict[str, str]) -> None:
    import shlex

    text = " ".join(shlex.quote(f"{k}={v}") for k, v in flags.items())
    assert k8s.parse_extra_args(text) == flags


# ----------------------------------------------------------------------------- networks


def test_service_ip_and_dns_address_defaults() -> None:
    assert k8s.apiserver_service_ip(k8s.DEFAULT_SERVICE_CIDR) == "10.152.183.1"
    assert k8s.dns_address(k8s.DEFAULT_SERVICE_CIDR) == "10.152.183.10"
    assert k8s.service_ip("10.96.0.0/12", 300) == "10.96.1.44"
    assert k8s.service_ip("fd00:10::/108", 10) == "fd00:10::a"


@pytest.mark.parametrize(
    ("cidr", "n"), [("10.0.0.0/30", 3), ("10.0.0.0/30", 0), ("10.0.0.0/29", 10)]
)
def test_service_ip_out_of_range(cidr: str, n: int) -> None:
    with pytest.raises(ValueError, match="no host address"):
        k8s.service_ip(cidr, n)


@pytest.mark.parametrize(
    "text", ["10.152.183.1/24", "10.152.183.0", "nonsense", "10.0.0.0/31", "300.0.0.0/8"]
)
def test_parse_cidr_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"CIDR|too small"):
        k8s.parse_cidr(text)


def test_cidrs_overlap() -> None:
    assert k8s.cidrs_overlap("10.1.0.0/16", "10.1.5.0/24")
    assert not k8s.cidrs_overlap(k8s.DEFAULT_SERVICE_CIDR, k8s.DEFAULT_POD_CIDR)
    assert not k8s.cidrs_overlap("10.0.0.0/8", "fd00::/64")


@given(st.integers(min_value=8, max_value=29), st.integers(min_value=1, max_value=6))
def test_service_ip_is_inside_the_network(prefix: int, n: int) -> None:
    cidr = str(ipaddress.ip_network(f"10.0.0.0/{prefix}"))
    assert ipaddress.ip_address(k8s.service_ip(cidr, n)) in ipaddress.ip_network(cidr)


def test_node_name_and_domain() -> None:
    assert k8s.node_name("Worker-0.Example.") == "worker-0.example"
    assert k8s.check_dns_domain("cluster.local") == "cluster.local"
    for bad in ("", "under_score", "-lead", "Upper.case", "a..b"):
        with pytest.raises(ValueError, match="DNS domain"):
            k8s.check_dns_domain(bad)
    with pytest.raises(ValueError, match="DNS domain"):
        k8s.node_name("bad host")


def test_api_url_brackets_ipv6() -> None:
    assert k8s.api_url("10.0.0.1") == "https://10.0.0.1:6443"
    assert k8s.api_url("fd00::1", 443) == "https://[fd00::1]:443"


# ----------------------------------------------------------------------------- images / releases


def test_images() -> None:
    assert k8s.pause_image() == "registry.k8s.io/pause:3.10"
    assert k8s.coredns_image("mirror.example:5000/k8s", "1.32.3") == (
        "mirror.example:5000/k8s/coredns/coredns:v1.11.3"
    )
    for bad in (
        "https://registry.k8s.io",
        "registry.k8s.io/",
        "",
        "a b",
        "registry.k8s.io/Upper",  # paths are lowercase
        "registry.k8s.io:0",
        "registry.k8s.io:65536",
        "-registry.k8s.io",
        "r" * (k8s.MAX_IMAGE_REGISTRY_LENGTH + 1),
    ):
        with pytest.raises(ValueError, match="not a registry"):
            k8s.check_image_registry(bad)
    for good in ("Registry.Example.com", "r.example:65535/a__b/c--d/e.f", "10.0.0.1:5000"):
        assert k8s.check_image_registry(good) == good


def test_release_urls() -> None:
    url = k8s.server_tarball_url("1.32.3", "amd64")
    assert url == "https://dl.k8s.io/v1.32.3/kubernetes-server-linux-amd64.tar.gz"
    assert k8s.checksum_url(url) == url + ".sha256"
    assert k8s.node_tarball_url("1.31.0", "arm64", "http://mirror.local/k8s/") == (
        "http://mirror.local/k8s/v1.31.0/kubernetes-node-linux-arm64.tar.gz"
    )
    with pytest.raises(ValueError, match="http"):
        k8s.server_tarball_url("1.32.3", "amd64", "ftp://x")
    with pytest.raises(k8s.UnsupportedVersionError):
        k8s.server_tarball_url("1.20.0", "amd64")


def test_parse_sha256_file() -> None:
    digest = "A" * 64
    assert k8s.parse_sha256_file(f"{digest}  kubernetes-server-linux-amd64.tar.gz\n") == "a" * 64
    for bad in ("", "abc", "<html>not found</html>"):
        with pytest.raises(ValueError, match="SHA-256"):
            k8s.parse_sha256_file(bad)


def test_machine_arch() -> None:
    assert k8s.machine_arch("x86_64") == "amd64"
    assert k8s.machine_arch("aarch64") == "arm64"
    assert k8s.machine_arch() in {"amd64", "arm64", "ppc64le", "s390x", "riscv64"}


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kaji.kubernetes; "
        "loaded = {n for n, m in sys.modules.items() if type(m).__name__ != '_LazyModule'}; "
        "print(sorted({'ipaddress', 'yaml', 'cryptography'} & loaded))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(__import__("pathlib").Path(k8s.__file__).parents[1])},
    )
    assert out.stdout.strip() == "[]"

"""kaji.host.proxy: the model's proxy settings from the hook environment, and no_proxy rules.

The downloads that go through these settings, against a real proxy, are in
test_host_binaries.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaji.host import ProxyError, ProxySettings, proxy_settings
from kaji.host.proxy import redact

ENV = {
    "JUJU_CHARM_HTTP_PROXY": "http://squid.internal:3128",
    "JUJU_CHARM_HTTPS_PROXY": "squid.internal:3129",
    "JUJU_CHARM_NO_PROXY": "127.0.0.1,localhost,::1, .svc.internal ,10.0.0.0/8",
}


def test_settings_come_from_the_juju_charm_variables_only() -> None:
    settings = proxy_settings(
        {**ENV, "HTTP_PROXY": "http://legacy:1", "http_proxy": "http://legacy:2"}
    )
    assert settings == ProxySettings(
        "http://squid.internal:3128",
        "http://squid.internal:3129",  # host:port alone means http://
        ("127.0.0.1", "localhost", "::1", ".svc.internal", "10.0.0.0/8"),
    )
    assert settings.environment() == {
        "HTTP_PROXY": "http://squid.internal:3128",
        "HTTPS_PROXY": "http://squid.internal:3129",
        "NO_PROXY": "127.0.0.1,localhost,::1,.svc.internal,10.0.0.0/8",
    }


def test_unset_or_empty_variables_mean_no_proxy() -> None:
    # Juju exports all three in every hook, empty when the model config is unset.
    empty = {"JUJU_CHARM_HTTP_PROXY": "", "JUJU_CHARM_HTTPS_PROXY": "", "JUJU_CHARM_NO_PROXY": ""}
    for environ in ({}, empty, {"HTTPS_PROXY": "http://legacy:3128"}):
        settings = proxy_settings(environ)
        assert not settings
        assert settings.environment() == {}
        assert settings.proxy_for("https://dl.k8s.io/x") is None


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert proxy_settings() == proxy_settings(ENV)


def test_each_scheme_uses_its_own_proxy() -> None:
    settings = ProxySettings.parse("http://p1:3128", "http://p2:3128")
    assert settings.proxy_for("http://dl.k8s.io/v1.32.3/x") == "http://p1:3128"
    assert settings.proxy_for("https://dl.k8s.io/v1.32.3/x") == "http://p2:3128"
    assert ProxySettings.parse(http="http://p1:3128").proxy_for("https://dl.k8s.io/") is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("*", "https://anything.example/", True),
        ("dl.k8s.io", "https://dl.k8s.io/x", True),
        ("dl.k8s.io", "https://cdn.dl.k8s.io/x", True),  # a domain covers its subdomains
        ("dl.k8s.io", "https://notdl.k8s.io/x", False),
        (".k8s.io", "https://dl.k8s.io/x", True),
        (".k8s.io", "https://k8s.io/x", False),  # a leading dot: subdomains only
        ("*.k8s.io", "https://k8s.io/x", False),
        ("*.k8s.io", "https://dl.k8s.io/x", True),
        ("DL.K8S.IO", "https://dl.k8s.io./x", True),  # case and a trailing dot do not matter
        ("10.0.0.0/8", "http://10.20.30.40:8080/x", True),
        ("10.0.0.0/8", "http://11.0.0.1/x", False),
        ("10.0.0.0/8", "http://ten.example/x", False),
        ("192.0.2.7", "http://192.0.2.7/x", True),
        ("fd00::/8", "http://[fd00::5]:5000/x", True),
        ("::1", "http://[::1]/x", True),
        ("mirror.internal:5000", "http://mirror.internal:5000/x", True),
        ("mirror.internal:5000", "http://mirror.internal/x", False),
        ("mirror.internal:443", "https://mirror.internal/x", True),  # the scheme's port
        ("192.0.2.7:80", "http://192.0.2.7/x", True),
        ("[fd00::5]:80", "http://[fd00::5]/x", True),
        ("[fd00::5]:80", "http://[fd00::5]:81/x", False),
        ("localhost", "http://127.0.0.1/x", False),  # names are not resolved
        ("", "http://127.0.0.1/x", False),  # loopback is proxied unless listed
    ],
)
def test_no_proxy_matching(no_proxy: str, url: str, direct: bool) -> None:
    settings = ProxySettings.parse("http://proxy:3128", "http://proxy:3128", no_proxy)
    assert (settings.proxy_for(url) is None) is direct


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"JUJU_CHARM_HTTP_PROXY": "https://proxy:3128"}, "juju-http-proxy"),
        ({"JUJU_CHARM_HTTP_PROXY": "socks5://proxy:1080"}, "juju-http-proxy"),
        ({"JUJU_CHARM_HTTPS_PROXY": "http://proxy:99999"}, "juju-https-proxy"),
        ({"JUJU_CHARM_HTTPS_PROXY": "http://proxy:0"}, "juju-https-proxy"),
        ({"JUJU_CHARM_HTTPS_PROXY": "http://"}, "juju-https-proxy"),
        ({"JUJU_CHARM_HTTP_PROXY": "http://proxy:3128/path"}, "juju-http-proxy"),
        ({"JUJU_CHARM_HTTP_PROXY": "http://proxy:3128?q=1"}, "juju-http-proxy"),
        ({"JUJU_CHARM_HTTP_PROXY": "http://pro xy:3128"}, "juju-http-proxy"),
        ({"JUJU_CHARM_HTTP_PROXY": "http://proxy:3128\nExecStart=/bin/sh"}, "juju-http-proxy"),
        ({"JUJU_CHARM_HTTP_PROXY": "http://" + "a" * 3000}, "juju-http-proxy"),
        ({"JUJU_CHARM_NO_PROXY": "a.example,b example"}, "juju-no-proxy"),
        ({"JUJU_CHARM_NO_PROXY": "a\nb"}, "juju-no-proxy"),
        ({"JUJU_CHARM_NO_PROXY": "x" * 70000}, "juju-no-proxy"),
    ],
)
def test_unusable_values_name_the_model_config_key(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ProxyError) as info:
        proxy_settings(environ)
    assert str(info.value).startswith(f"invalid model config {named} (JUJU_CHARM_")


def test_credentials_never_appear_in_messages_or_repr() -> None:
    settings = ProxySettings.parse("http://user:s3cret@proxy:3128")
    assert settings.proxy_for("http://x/") == "http://user:s3cret@proxy:3128"
    assert redact(settings.http or "") == "http://proxy:3128"
    assert "s3cret" not in repr(settings)
    with pytest.raises(ProxyError) as info:
        ProxySettings.parse("http://user:s3cret@proxy:3128/path")
    assert "s3cret" not in str(info.value)


@given(
    st.text(max_size=300),
    st.text(max_size=300),
    st.text(max_size=300),
    st.sampled_from(["http://dl.k8s.io/x", "https://[fd00::1]:99/x", "http://10.1.2.3/"]),
)
def test_any_value_parses_or_is_refused_by_name(
    http: str, https: str, no_proxy: str, url: str
) -> None:
    try:
        settings = ProxySettings.parse(http, https, no_proxy)
    except ProxyError as exc:
        message = str(exc)
    else:
        message = ""
        settings.proxy_for(url)
    if message:
        assert message.startswith("invalid model config juju-")
        return
    for value in settings.environment().values():  # fit for a systemd Environment= line
        assert not any(c.isspace() or ord(c) < 0x20 for c in value)

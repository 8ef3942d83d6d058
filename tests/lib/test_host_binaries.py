"""kaji.host.binaries: verified tarball installs with an atomically switched ``current``.

Downloads go through the model's proxies: a real forward proxy on loopback (plain GETs and
CONNECT tunnels, tests below) shows every byte went through it, and that no_proxy hosts and
a proxy-less model go direct.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import http.server
import io
import os
import select
import socket
import ssl
import stat
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaji import pki
from kaji.host import (
    BinaryInstallError,
    Host,
    ProxySettings,
    fetch_text,
    install_binaries,
    installed_version,
)

FILES = ["etcd", "etcdctl"]


def make_tarball(
    path: Path,
    version: str,
    *,
    top: str | None = "etcd-release",
    extra: list[tarfile.TarInfo] | None = None,
    omit: str | None = None,
) -> str:
    """Write a gzipped release tarball with shell-script 'binaries'; return its SHA-256."""
    with tarfile.open(path, "w:gz") as tar:
        for name in FILES:
            if name == omit:
                continue
            data = f"#!/bin/sh\necho {name} {version}\n".encode()
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            info.mode = 0o644  # not executable in the archive: the installer must fix it
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def symlink_member(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def file_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


class Server:
    """A static file server on 127.0.0.1 that counts requests (TLS with ``tls``)."""

    def __init__(self, directory: Path, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    directory = tmp_path / "www"
    directory.mkdir()
    server = Server(directory)
    try:
        yield server, directory
    finally:
        server.close()


@pytest.fixture(autouse=True)
def no_model_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the shell running the tests has set, the model here has no proxies."""
    for name in ("JUJU_CHARM_HTTP_PROXY", "JUJU_CHARM_HTTPS_PROXY", "JUJU_CHARM_NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "machine")


def leftovers(host: Host, name: str = "etcd") -> list[str]:
    base = host.path(f"/opt/kaji/{name}")
    return sorted(p.name for p in base.iterdir() if p.name.startswith("."))


def test_install_by_url_then_reinstall_is_unchanged(
    host: Host, served: tuple[Server, Path]
) -> None:
    server, www = served
    sha = make_tarball(www / "etcd-1.0.tar.gz", "1.0")
    result = install_binaries(
        host,
        "etcd",
        "1.0",
        files=FILES,
        url=server.url("etcd-1.0.tar.gz"),
        sha256=sha,
        strip_components=1,
    )
    assert result.changed
    assert result.sha256 == sha
    assert result.directory == host.path("/opt/kaji/etcd/1.0")
    assert os.readlink(host.path("/opt/kaji/etcd/current")) == "1.0"
    assert installed_version(host, "etcd") == "1.0"
    for name in FILES:
        installed = result.path(name)
        assert stat.S_IMODE(installed.stat().st_mode) == 0o755
        assert host.run([str(installed)]).stdout == f"{name} 1.0\n"
    assert leftovers(host) == []
    assert host.stats.binaries_installed == 1
    assert server.requests == ["/etcd-1.0.tar.gz"]

    again = install_binaries(
        host,
        "etcd",
        "1.0",
        files=FILES,
        url=server.url("etcd-1.0.tar.gz"),
        sha256=sha.upper(),
        strip_components=1,
    )
    assert not again.changed
    assert server.requests == ["/etcd-1.0.tar.gz"], "an installed checksum needs no download"
    assert host.stats.binaries_installed == 1


def test_upgrade_switches_current_and_keeps_the_old_version(
    host: Host, served: tuple[Server, Path]
) -> None:
    server, www = served
    sha1 = make_tarball(www / "1.tgz", "1.0")
    sha2 = make_tarball(www / "2.tgz", "2.0")
    opts = {"files": FILES, "strip_components": 1}
    install_binaries(host, "etcd", "1.0", url=server.url("1.tgz"), sha256=sha1, **opts)
    result = install_binaries(host, "etcd", "2.0", url=server.url("2.tgz"), sha256=sha2, **opts)
    assert result.changed
    assert installed_version(host, "etcd") == "2.0"
    assert host.run([str(result.path("etcd"))]).stdout == "etcd 2.0\n"
    assert host.path("/opt/kaji/etcd/1.0/etcd").exists()
    # Rolling back to an installed version only moves the link.
    back = install_binaries(host, "etcd", "1.0", url=server.url("1.tgz"), sha256=sha1, **opts)
    assert back.changed
    assert installed_version(host, "etcd") == "1.0"
    assert server.requests == ["/1.tgz", "/2.tgz"]


def test_checksum_mismatch_is_refused_and_current_untouched(
    host: Host, served: tuple[Server, Path]
) -> None:
    server, www = served
    sha1 = make_tarball(www / "1.tgz", "1.0")
    install_binaries(
        host, "etcd", "1.0", files=FILES, url=server.url("1.tgz"), sha256=sha1, strip_components=1
    )
    make_tarball(www / "2.tgz", "2.0")
    tampered_sha = hashlib.sha256(b"what the release page said").hexdigest()
    with pytest.raises(BinaryInstallError, match=f"SHA-256 .* expected {tampered_sha}"):
        install_binaries(
            host,
            "etcd",
            "2.0",
            files=FILES,
            url=server.url("2.tgz"),
            sha256=tampered_sha,
            strip_components=1,
        )
    assert installed_version(host, "etcd") == "1.0"
    assert not host.path("/opt/kaji/etcd/2.0").exists()
    assert leftovers(host) == []
    assert host.run([str(host.path("/opt/kaji/etcd/current/etcd"))]).stdout == "etcd 1.0\n"


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_broken_archive_is_refused(
    host: Host, served: tuple[Server, Path], kind: str, tmp_path: Path
) -> None:
    server, www = served
    if kind == "garbage":
        data = b"<html>404 but served as 200</html>" * 10
    else:
        make_tarball(tmp_path / "good.tgz", "1.0")
        data = (tmp_path / "good.tgz").read_bytes()[:-40]
    (www / "bad.tgz").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(BinaryInstallError, match="not a readable tar archive"):
        install_binaries(host, "etcd", "1.0", files=FILES, url=server.url("bad.tgz"), sha256=sha)
    assert installed_version(host, "etcd") is None
    assert leftovers(host) == []


@pytest.mark.parametrize(
    "member",
    [
        file_member("../evil"),
        file_member("etcd-release/../../evil"),
        file_member("/tmp/kaji-evil-absolute"),
        symlink_member("etcd-release/link", "/etc/passwd"),
        symlink_member("etcd-release/link", "../../../evil"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "absolute-symlink", "relative-symlink"],
)
def test_members_escaping_the_install_directory_are_refused(
    host: Host, tmp_path: Path, member: tarfile.TarInfo
) -> None:
    archive = tmp_path / "evil.tgz"
    make_tarball(archive, "1.0", extra=[member])
    with pytest.raises(BinaryInstallError, match="outside"):
        install_binaries(host, "etcd", "1.0", files=FILES, source=archive, strip_components=1)
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "machine" / "opt" / "kaji" / "evil").exists()
    assert not Path("/tmp/kaji-evil-absolute").exists()
    assert installed_version(host, "etcd") is None
    assert leftovers(host) == []


def test_symlink_chains_cannot_escape(host: Host, tmp_path: Path) -> None:
    # "d/up" -> ".." stays inside; "d/up/out" -> ".." would then land outside.
    archive = tmp_path / "chain.tgz"
    make_tarball(
        archive,
        "1.0",
        top=None,
        extra=[symlink_member("d/up", ".."), symlink_member("d/up/out", "..")],
    )
    with pytest.raises(BinaryInstallError, match=r"outside|escapes"):
        install_binaries(host, "etcd", "1.0", files=FILES, source=archive)
    assert installed_version(host, "etcd") is None


def test_links_redirected_by_later_links_cannot_escape(host: Host, tmp_path: Path) -> None:
    # "s" -> "." and "t" -> "s/.." look harmless one by one, but together "t" is the parent
    # of the install directory: nothing may be created through it, and it may not remain.
    for extra, victim in (
        ([symlink_member("s", "."), symlink_member("t", "s/.."), file_member("t/x/evil")], "x"),
        ([symlink_member("t", "s/.."), symlink_member("s", ".")], None),
    ):
        archive = tmp_path / "late.tgz"
        make_tarball(archive, "1.0", top=None, extra=extra)
        with pytest.raises(BinaryInstallError, match=r"escapes|outside"):
            install_binaries(host, "etcd", "1.0", files=FILES, source=archive)
        if victim:
            assert not host.path("/opt/kaji/etcd").joinpath(victim).exists()
        assert installed_version(host, "etcd") is None
        assert leftovers(host) == []


def test_hard_links_inside_the_archive_work_and_outside_are_refused(
    host: Host, tmp_path: Path
) -> None:
    link = tarfile.TarInfo("etcd-release/etcdctl-alias")
    link.type = tarfile.LNKTYPE
    link.linkname = "etcd-release/etcdctl"
    archive = tmp_path / "links.tgz"
    make_tarball(archive, "1.0", extra=[link])
    result = install_binaries(
        host, "etcd", "1.0", files=[*FILES, "etcdctl-alias"], source=archive, strip_components=1
    )
    assert result.path("etcdctl-alias").read_text() == result.path("etcdctl").read_text()

    outside = tarfile.TarInfo("etcd-release/passwd")
    outside.type = tarfile.LNKTYPE
    outside.linkname = "/etc/passwd"
    make_tarball(archive, "2.0", extra=[outside])
    with pytest.raises(BinaryInstallError, match="outside"):
        install_binaries(host, "etcd", "2.0", files=FILES, source=archive, strip_components=1)
    assert installed_version(host, "etcd") == "1.0"


def test_missing_named_file_is_refused_and_previous_install_kept(
    host: Host, tmp_path: Path
) -> None:
    good = tmp_path / "good.tgz"
    make_tarball(good, "1.0")
    install_binaries(host, "etcd", "1.0", files=FILES, source=good, strip_components=1)
    incomplete = tmp_path / "incomplete.tgz"
    make_tarball(incomplete, "2.0", omit="etcdctl")
    with pytest.raises(BinaryInstallError, match="does not contain etcdctl"):
        install_binaries(host, "etcd", "2.0", files=FILES, source=incomplete, strip_components=1)
    assert installed_version(host, "etcd") == "1.0"
    assert not host.path("/opt/kaji/etcd/2.0").exists()
    # Same version, new broken resource: the installed 1.0 stays whole.
    with pytest.raises(BinaryInstallError):
        install_binaries(host, "etcd", "1.0", files=FILES, source=incomplete, strip_components=1)
    assert host.run([str(host.path("/opt/kaji/etcd/1.0/etcdctl"))]).stdout == "etcdctl 1.0\n"
    assert leftovers(host) == []


def test_install_from_a_local_resource(host: Host, tmp_path: Path) -> None:
    resource = tmp_path / "etcd.tar.gz"
    sha = make_tarball(resource, "1.0", top=None)
    first = install_binaries(host, "etcd", "1.0", files=FILES, source=resource)
    assert first.changed
    assert first.sha256 == sha
    assert not install_binaries(host, "etcd", "1.0", files=FILES, source=resource).changed
    assert not install_binaries(
        host, "etcd", "1.0", files=FILES, source=resource, sha256=sha
    ).changed
    with pytest.raises(BinaryInstallError, match="expected"):
        install_binaries(host, "etcd", "1.0", files=FILES, source=resource, sha256="0" * 64)

    # The operator attaches a rebuilt resource for the same version: it is reinstalled.
    make_tarball(resource, "1.0-rebuilt", top=None)
    again = install_binaries(host, "etcd", "1.0", files=FILES, source=resource)
    assert again.changed
    assert host.run([str(again.path("etcd"))]).stdout == "etcd 1.0-rebuilt\n"
    assert leftovers(host) == []


def test_argument_errors(host: Host, tmp_path: Path, served: tuple[Server, Path]) -> None:
    server, _ = served
    resource = tmp_path / "r.tgz"
    make_tarball(resource, "1.0")
    with pytest.raises(BinaryInstallError, match="needs the archive's sha256"):
        install_binaries(host, "etcd", "1.0", files=FILES, url=server.url("r.tgz"))
    with pytest.raises(BinaryInstallError, match="exactly one"):
        install_binaries(host, "etcd", "1.0", files=FILES, source=resource, url="http://x/")
    with pytest.raises(BinaryInstallError, match="invalid version"):
        install_binaries(host, "etcd", "../1.0", files=FILES, source=resource)
    with pytest.raises(BinaryInstallError, match="relative path"):
        install_binaries(host, "etcd", "1.0", files=["/usr/bin/etcd"], source=resource)
    with pytest.raises(BinaryInstallError, match=r"download of .* failed"):
        install_binaries(
            host, "etcd", "1.0", files=FILES, url=server.url("missing.tgz"), sha256="a" * 64
        )
    with pytest.raises(BinaryInstallError, match="http and https"):
        install_binaries(
            host, "etcd", "1.0", files=FILES, url="file:///etc/passwd", sha256="a" * 64
        )
    assert installed_version(host, "etcd") is None


# --- proxies -------------------------------------------------------------------------------------


class Proxy:
    """A forward HTTP proxy on 127.0.0.1: absolute-form requests and CONNECT tunnels.

    ``names`` are host names only this proxy can resolve (to 127.0.0.1), so a download of one
    can only have gone through it. Every request line is recorded in ``seen``, with the
    Proxy-Authorization it carried in ``auth``; ``user`` (``name:password``) makes the proxy
    refuse requests without those credentials (407).
    """

    def __init__(self, names: tuple[str, ...] = (), user: str | None = None) -> None:
        self.seen: list[str] = []
        self.auth: list[str | None] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _allowed(self) -> bool:
                proxy.seen.append(f"{self.command} {self.path}")
                given = self.headers.get("Proxy-Authorization")
                proxy.auth.append(given)
                if user is None or given == f"Basic {base64.b64encode(user.encode()).decode()}":
                    return True
                self.send_response(407)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_GET(self) -> None:
                if not self._allowed():
                    return
                target = urllib.parse.urlsplit(self.path)
                assert target.scheme == "http", self.path
                assert target.hostname, self.path
                upstream = http.client.HTTPConnection(
                    proxy.resolve(target.hostname), target.port or 80, timeout=10
                )
                upstream.request("GET", target.path or "/", headers={"Host": target.netloc})
                response = upstream.getresponse()
                body = response.read()
                self.send_response(response.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

            def do_CONNECT(self) -> None:
                if not self._allowed():
                    return
                name, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((proxy.resolve(name), int(port)), timeout=10)
                self.send_response(200, "Connection established")
                self.end_headers()
                sockets = [self.connection, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(sockets, [], [], 10)
                        if not ready:
                            return
                        for sock in ready:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is self.connection else self.connection).sendall(
                                data
                            )
                finally:
                    upstream.close()
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.names = names
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def resolve(self, name: str) -> str:
        return "127.0.0.1" if name in self.names or name == "127.0.0.1" else name

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


DOWNLOADS = "downloads.kaji.test"  # resolvable only by the proxy


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = Proxy((DOWNLOADS,))
    try:
        yield server
    finally:
        server.close()


def test_download_and_checksum_go_through_the_http_proxy(
    host: Host, served: tuple[Server, Path], proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, www = served
    sha = make_tarball(www / "etcd-1.0.tar.gz", "1.0")
    (www / "SHA256SUMS").write_text(f"{sha}  etcd-1.0.tar.gz\n")
    monkeypatch.setenv("JUJU_CHARM_HTTP_PROXY", proxy.url)
    monkeypatch.setenv("JUJU_CHARM_NO_PROXY", "127.0.0.1,localhost,::1")
    # What urllib alone would use instead: a dead proxy, and a no_proxy covering everything.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "*")
    base = f"http://{DOWNLOADS}:{server.port}"

    assert fetch_text(f"{base}/SHA256SUMS").split()[0] == sha
    result = install_binaries(
        host,
        "etcd",
        "1.0",
        files=FILES,
        url=f"{base}/etcd-1.0.tar.gz",
        sha256=sha,
        strip_components=1,
    )
    assert result.changed
    assert host.run([str(result.path("etcd"))]).stdout == "etcd 1.0\n"
    assert proxy.seen == [f"GET {base}/SHA256SUMS", f"GET {base}/etcd-1.0.tar.gz"]
    assert server.requests == ["/SHA256SUMS", "/etcd-1.0.tar.gz"]


def test_no_proxy_hosts_bypass_the_proxy(
    host: Host, served: tuple[Server, Path], proxy: Proxy
) -> None:
    server, www = served
    sha = make_tarball(www / "etcd-1.0.tar.gz", "1.0")
    for no_proxy in ("127.0.0.1", "127.0.0.0/8", f"127.0.0.1:{server.port}", "*"):
        proxies = ProxySettings.parse(proxy.url, proxy.url, f"localhost,{no_proxy}")
        assert fetch_text(server.url("etcd-1.0.tar.gz"), proxies=proxies, limit=10)
    proxies = ProxySettings.parse(proxy.url, proxy.url, "127.0.0.1")
    install_binaries(
        host,
        "etcd",
        "1.0",
        files=FILES,
        url=server.url("etcd-1.0.tar.gz"),
        sha256=sha,
        strip_components=1,
        proxies=proxies,
    )
    assert proxy.seen == []
    assert len(server.requests) == 5
    # Another port of the same host is not covered by a host:port entry.
    other = ProxySettings.parse(proxy.url, "", f"127.0.0.1:{server.port + 1}")
    fetch_text(server.url("etcd-1.0.tar.gz"), proxies=other, limit=10)
    assert proxy.seen == [f"GET {server.url('etcd-1.0.tar.gz')}"]


def test_https_downloads_tunnel_through_the_https_proxy(
    host: Host, tmp_path: Path, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = pki.create_ca("kaji-test-downloads")
    key = pki.generate_private_key()
    cert = pki.sign_csr(
        pki.create_csr(key, pki.Identity.of(DOWNLOADS, dns_names=[DOWNLOADS])),
        ca,
        pki.Profile.SERVER,
    )
    (tmp_path / "server.pem").write_text(cert + key)
    (tmp_path / "ca.pem").write_text(ca.cert_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "server.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the client trusts our CA
    www = tmp_path / "www"
    www.mkdir()
    sha = make_tarball(www / "etcd-1.0.tar.gz", "1.0")
    server = Server(www, tls)
    try:
        url = f"https://{DOWNLOADS}:{server.port}/etcd-1.0.tar.gz"
        http_only = ProxySettings.parse(http=proxy.url)
        with pytest.raises(BinaryInstallError, match="download of"):
            fetch_text(url, proxies=http_only)  # https is not sent to the http proxy
        assert proxy.seen == []
        monkeypatch.setenv("JUJU_CHARM_HTTPS_PROXY", proxy.url)
        result = install_binaries(
            host, "etcd", "1.0", files=FILES, url=url, sha256=sha, strip_components=1
        )
        assert result.changed
        assert proxy.seen == [f"CONNECT {DOWNLOADS}:{server.port}"]
        assert server.requests == ["/etcd-1.0.tar.gz"]
    finally:
        server.close()


def test_proxy_credentials_are_sent_and_never_shown(
    served: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, www = served
    (www / "SHA256SUMS").write_text("x\n")
    guarded = Proxy((DOWNLOADS,), user="kaji:s3cr@t")
    try:
        base = guarded.url.removeprefix("http://")
        monkeypatch.setenv("JUJU_CHARM_HTTP_PROXY", f"http://kaji:s3cr%40t@{base}")
        assert fetch_text(f"http://{DOWNLOADS}:{server.port}/SHA256SUMS") == "x\n"
        monkeypatch.setenv("JUJU_CHARM_HTTP_PROXY", f"http://kaji:wr0ng@{base}")
        with pytest.raises(BinaryInstallError) as info:
            fetch_text(f"http://{DOWNLOADS}:{server.port}/SHA256SUMS")
        assert f"through proxy http://{base}" in str(info.value)
        assert "407" in str(info.value)
        assert "wr0ng" not in str(info.value)
        assert guarded.auth[0] == f"Basic {base64.b64encode(b'kaji:s3cr@t').decode()}"
    finally:
        guarded.close()


def test_unusable_proxy_settings_fail_the_download_by_name(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUJU_CHARM_HTTPS_PROXY", "http://proxy:99999")
    with pytest.raises(BinaryInstallError, match=r"invalid model config juju-https-proxy"):
        install_binaries(
            host, "etcd", "1.0", files=FILES, url="https://dl.example/x", sha256="a" * 64
        )
    with pytest.raises(BinaryInstallError, match=r"invalid model config juju-https-proxy"):
        fetch_text("https://dl.example/x")
    assert installed_version(host, "etcd") is None

"""Installing release binaries from a tarball: a Juju resource or a checksummed download.

Layout (machine paths)::

    /opt/kaji/<name>/<version>/...        one directory per installed version
    /opt/kaji/<name>/<version>/.kaji-install.json   what was installed from where
    /opt/kaji/<name>/current -> <version>  relative symlink, switched atomically

Nothing under ``<version>`` or ``current`` changes until the archive is verified (checksum,
every member inside the install directory, every named file present), so a failed install
leaves the previous one in place.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from kaji.host import files as fileops
from kaji.host.errors import BinaryInstallError
from kaji.host.proxy import ProxyError, ProxySettings, proxy_settings, redact

if TYPE_CHECKING:
    from kaji.host.root import Host

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MARKER = ".kaji-install.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class InstallResult:
    """The outcome of ``install_binaries``."""

    #: True if a new version was unpacked or ``current`` now points elsewhere.
    changed: bool
    #: The real path of ``/opt/kaji/<name>/<version>``.
    directory: Path
    #: The real path of the ``/opt/kaji/<name>/current`` symlink.
    current: Path
    #: SHA-256 of the installed archive.
    sha256: str

    def path(self, file: str) -> Path:
        """The real path of an installed file, through ``current`` (stable across upgrades)."""
        return self.current / file


def _check_name(value: str, what: str) -> None:
    if not _NAME.fullmatch(value) or value == "current" or ".." in value:
        raise BinaryInstallError(f"invalid {what} {value!r}")


def _check_file_names(names: Sequence[str]) -> tuple[PurePosixPath, ...]:
    if isinstance(names, str) or not names:
        raise BinaryInstallError("files must be a non-empty list of relative paths")
    paths = []
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise BinaryInstallError(f"file name {name!r} must be a relative path")
        paths.append(path)
    return tuple(paths)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _opener(proxies: ProxySettings) -> urllib.request.OpenerDirector:
    """An http(s)-only opener that proxies exactly as ``proxies`` says.

    urllib's own ProxyHandler would read ``http_proxy``/``no_proxy`` from the environment;
    this one takes the choice from ``proxies`` for every request, redirects included (each
    redirect target gets its own ``no_proxy`` check).
    """

    class ChosenProxy(urllib.request.BaseHandler):
        handler_order = 100  # before the http(s) handlers, as urllib's ProxyHandler

        def _route(self, req: urllib.request.Request) -> None:
            proxy = proxies.proxy_for(req.full_url)
            if proxy is None or req.has_proxy():
                return
            parts = urllib.parse.urlsplit(proxy)
            if parts.username is not None:
                user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                token = base64.b64encode(user.encode()).decode("ascii")
                # Unredirected: a redirect to a no_proxy host must not carry it along.
                req.add_unredirected_header("Proxy-Authorization", f"Basic {token}")
            port = f":{parts.port}" if parts.port else ""
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
            req.set_proxy(f"{host}{port}", "http")  # https URLs tunnel with CONNECT

        def http_open(self, req: urllib.request.Request) -> None:
            self._route(req)

        def https_open(self, req: urllib.request.Request) -> None:
            self._route(req)

    opener = urllib.request.OpenerDirector()
    for handler in (
        ChosenProxy(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _settings(proxies: ProxySettings | None) -> ProxySettings:
    if proxies is not None:
        return proxies
    try:
        return proxy_settings()
    except ProxyError as exc:
        raise BinaryInstallError(str(exc)) from exc


def _via(url: str, proxies: ProxySettings) -> str:
    proxy = proxies.proxy_for(url)
    return f" (through proxy {redact(proxy)})" if proxy else ""


@contextlib.contextmanager
def _open(url: str, timeout: float, proxies: ProxySettings | None) -> Iterator[Any]:
    """GET ``url`` (http(s) only) as the proxy settings say.

    Raises:
        BinaryInstallError: a bad URL or proxy setting, or a failure while opening or reading.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise BinaryInstallError(f"only http and https downloads are supported, not {url!r}")
    settings = _settings(proxies)
    try:
        with _opener(settings).open(url, timeout=timeout) as response:
            yield response
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise BinaryInstallError(f"download of {url}{_via(url, settings)} failed: {exc}") from exc


def fetch_text(
    url: str,
    *,
    timeout: float = 30,
    limit: int = 1 << 20,
    proxies: ProxySettings | None = None,
) -> str:
    """GET a small text file (a checksum list) over http(s), honouring the model's proxies.

    Args:
        url: what to fetch.
        timeout: seconds for the connection and each read.
        limit: at most this many bytes are read.
        proxies: the proxy settings; None reads them from the hook environment.

    Raises:
        BinaryInstallError: a bad URL or proxy setting, or the download failed.
    """
    with _open(url, timeout, proxies) as response:
        data: bytes = response.read(limit)
    return data.decode("utf-8", "replace")


def _download(
    url: str, directory: Path, timeout: float, proxies: ProxySettings | None
) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file in ``directory``; return it and its SHA-256."""
    temp = directory / f".download-{secrets.token_hex(4)}"
    digest = hashlib.sha256()
    try:
        with _open(url, timeout, proxies) as response, open(temp, "xb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return temp, digest.hexdigest()


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _member_path(name: str, strip: int) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise BinaryInstallError(f"archive member {name!r} points outside the install directory")
    parts = [p for p in path.parts if p != "."][strip:]
    return PurePosixPath(*parts) if parts else None


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, strip: int) -> None:
    rel = _member_path(member.name, strip)
    if rel is None:
        return
    root = os.path.realpath(dest)
    # Create the parents one at a time, resolving each through the links already extracted,
    # so no directory is ever made (and no member written) outside the install directory.
    parent = dest
    for part in rel.parent.parts:
        parent = parent / part
        real = os.path.realpath(parent)
        if not _inside(real, root):
            raise BinaryInstallError(f"archive member {member.name!r} escapes through a symlink")
        if not os.path.exists(real):
            os.mkdir(real, 0o755)
        elif not os.path.isdir(real):
            raise BinaryInstallError(f"archive member {member.name!r} is below a file")
    parent_real = os.path.realpath(parent)
    target = Path(parent_real) / rel.name
    if os.path.lexists(target) and not os.path.isdir(target):
        os.unlink(target)
    if member.isdir():
        target.mkdir(exist_ok=True)
        os.chmod(target, 0o755)  # noqa: S103 - install directories are world-readable
    elif member.isreg():
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isreg() members always have data
            raise BinaryInstallError(f"cannot read archive member {member.name!r}")
        with source, open(target, "xb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
        os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
    elif member.issym():
        link = member.linkname
        resolved = os.path.realpath(os.path.join(parent_real, link))
        if os.path.isabs(link) or not _inside(resolved, root):
            raise BinaryInstallError(
                f"archive member {member.name!r} is a symlink to {link!r}, outside the archive"
            )
        os.symlink(link, target)
    elif member.islnk():
        linked = _member_path(member.linkname, strip)
        source_path = os.path.realpath(dest / linked) if linked is not None else root
        if linked is None or not _inside(source_path, root) or not os.path.isfile(source_path):
            raise BinaryInstallError(
                f"archive member {member.name!r} is a hard link to {member.linkname!r}, "
                "which is not a file in the archive"
            )
        os.link(source_path, target)
    else:
        raise BinaryInstallError(f"archive member {member.name!r} is not a file, dir or link")


def _extract(archive: Path, dest: Path, strip: int, label: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _extract_member(tar, member, dest, strip)
    except BinaryInstallError:
        raise
    except Exception as exc:  # tarfile, zlib, lzma, bz2 and EOF errors alike
        raise BinaryInstallError(f"{label} is not a readable tar archive: {exc}") from exc
    # A link checked when it was made can be redirected by links made after it.
    root = os.path.realpath(dest)
    for directory, dirnames, filenames in os.walk(dest):
        for entry in (*dirnames, *filenames):
            path = os.path.join(directory, entry)
            if os.path.islink(path) and not _inside(os.path.realpath(path), root):
                raise BinaryInstallError(
                    f"{label}: symlink {os.path.relpath(path, dest)} resolves outside the archive"
                )


def _installed(directory: Path, names: Sequence[PurePosixPath]) -> dict[str, Any] | None:
    """The install marker of ``directory`` if it is complete, else None."""
    text = fileops.read_text(directory / _MARKER)
    if text is None:
        return None
    try:
        marker = json.loads(text)
    except ValueError:
        return None
    if not isinstance(marker, dict) or not all((directory / n).is_file() for n in names):
        return None
    return marker


def install_binaries(
    host: Host,
    name: str,
    version: str,
    *,
    files: Sequence[str],
    source: str | os.PathLike[str] | None = None,
    url: str | None = None,
    sha256: str | None = None,
    strip_components: int = 0,
    timeout: float = 60,
    proxies: ProxySettings | None = None,
) -> InstallResult:
    """Install the binaries of ``name`` ``version`` from a tarball and make them current.

    Args:
        host: the machine to install on (paths go under its root).
        name: the component, e.g. ``etcd``; installs into ``/opt/kaji/<name>/<version>``.
        version: the version directory name, e.g. ``3.5.17``.
        files: paths (relative to the install directory) that must exist after unpacking;
            they are made executable (0755).
        source: a local tarball (a Juju resource). Verified against ``sha256`` when given.
        url: an http(s) URL to download instead; requires ``sha256``.
        sha256: the expected SHA-256 of the archive (hex).
        strip_components: leading path components dropped from members, as ``tar`` does.
        timeout: seconds for the download connection and each read.
        proxies: the proxy settings for the download; None reads the model's from the hook
            environment (:func:`kaji.host.proxy.proxy_settings`).

    Returns:
        InstallResult; ``changed`` is False when this version with this archive checksum was
        already installed and current.

    Raises:
        BinaryInstallError: bad arguments, checksum mismatch, download failure, unreadable
            archive, a member escaping the install directory, or a named file missing. The
            previous install and ``current`` are left untouched.
    """
    _check_name(name, "name")
    _check_name(version, "version")
    names = _check_file_names(files)
    if (source is None) == (url is None):
        raise BinaryInstallError("give exactly one of source (a local tarball) or url")
    if sha256 is not None:
        sha256 = sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise BinaryInstallError(f"sha256 must be 64 hex digits, got {sha256!r}")
    elif url is not None:
        raise BinaryInstallError("a download needs the archive's sha256")
    if strip_components < 0:
        raise BinaryInstallError("strip_components must be >= 0")

    base = host.path(f"/opt/kaji/{name}")
    directory = base / version
    current = base / "current"
    marker = _installed(directory, names)
    source_id: dict[str, Any] | None = None
    source_path = None if source is None else Path(source)
    if source_path is not None:
        try:
            st = source_path.stat()
        except OSError as exc:
            raise BinaryInstallError(f"cannot read resource {source_path}: {exc}") from exc
        source_id = {
            "path": str(source_path.resolve()),
            "size": st.st_size,
            "mtime": st.st_mtime_ns,
        }
        if marker is not None and marker.get("source") == source_id:
            actual = marker.get("sha256")  # same file as last time: skip hashing it again
        else:
            actual = _hash_file(source_path)
        if sha256 is not None and actual != sha256:
            raise BinaryInstallError(
                f"resource {source_path} has SHA-256 {actual}, expected {sha256}"
            )
        sha256 = actual
    assert sha256 is not None

    if marker is not None and marker.get("sha256") == sha256:
        if source_id is not None and marker.get("source") != source_id:
            fileops.write_file(directory / _MARKER, json.dumps({**marker, "source": source_id}))
        switched = fileops.ensure_symlink(current, version)
        host.stats.binaries_installed += switched
        return InstallResult(switched, directory, current, sha256)

    fileops.ensure_directory(base, 0o755)
    downloaded: Path | None = None
    staging = base / f".staging-{version}-{secrets.token_hex(4)}"
    old = base / f".old-{version}-{secrets.token_hex(4)}"
    try:
        if url is not None:
            downloaded, actual = _download(url, base, timeout, proxies)
            if actual != sha256:
                raise BinaryInstallError(f"{url} has SHA-256 {actual}, expected {sha256}")
            archive, label = downloaded, url
        else:
            assert source_path is not None
            archive, label = source_path, f"resource {source_path}"
        staging.mkdir(mode=0o755)
        _extract(archive, staging, strip_components, label)
        root = os.path.realpath(staging)
        for file in names:
            real = os.path.realpath(staging / file)
            if not _inside(real, root) or not os.path.isfile(real):
                raise BinaryInstallError(f"{label} does not contain {file}")
            os.chmod(real, 0o755)  # noqa: S103 - binaries are world-executable by design
        record: dict[str, Any] = {
            "name": name,
            "version": version,
            "sha256": sha256,
            "files": list(files),
            "source": source_id,
            "url": url,
        }
        fileops.write_file(staging / _MARKER, json.dumps(record, indent=1, sort_keys=True))
        os.chmod(staging, 0o755)  # noqa: S103 - install directories are world-readable
        if os.path.lexists(directory):
            os.rename(directory, old)
        try:
            os.rename(staging, directory)
        except OSError:
            if os.path.lexists(old):
                os.rename(old, directory)
            raise
    finally:
        if downloaded is not None:
            with contextlib.suppress(FileNotFoundError):
                downloaded.unlink()
        for leftover in (staging, old):
            if os.path.lexists(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
    fileops.ensure_symlink(current, version)
    host.stats.binaries_installed += 1
    return InstallResult(True, directory, current, sha256)


def installed_version(host: Host, name: str) -> str | None:
    """The version ``/opt/kaji/<name>/current`` points to, or None."""
    _check_name(name, "name")
    try:
        return os.readlink(host.path(f"/opt/kaji/{name}/current"))
    except (FileNotFoundError, OSError):
        return None

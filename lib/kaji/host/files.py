"""Files on the machine: atomic, idempotent writes that report whether anything changed."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import stat
from pathlib import Path

from kaji.host.errors import HostError

PathLike = str | os.PathLike[str]


def _uid(owner: str | int | None) -> int:
    if owner is None:
        return -1
    if isinstance(owner, int):
        return owner
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise HostError(f"unknown user {owner!r}") from None


def _gid(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise HostError(f"unknown group {group!r}") from None


def _fix_metadata(path: Path, st: os.stat_result, mode: int, uid: int, gid: int) -> bool:
    """Correct owner, group and mode of an existing path; return True if any differed."""
    owner_differs = (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
    mode_differs = stat.S_IMODE(st.st_mode) != mode
    if owner_differs:
        os.chown(path, uid, gid, follow_symlinks=False)
    if mode_differs or owner_differs:  # chown may clear setuid/setgid bits: reapply the mode
        os.chmod(path, mode)
    return owner_differs or mode_differs


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.kaji-{secrets.token_hex(4)}")


def write_file(
    path: PathLike,
    content: str | bytes,
    *,
    mode: int = 0o644,
    owner: str | int | None = None,
    group: str | int | None = None,
) -> bool:
    """Make ``path`` hold exactly ``content`` with ``mode`` (and owner/group when given).

    The write is atomic (a temporary file in the same directory, fsynced, then renamed over
    ``path``); missing parent directories are created (0755). When the content is already
    identical the file is not rewritten (inode and mtime unchanged), but a differing mode or
    owner is corrected. A symlink at ``path`` is replaced by a regular file.

    Returns:
        True if anything on disk changed.
    """
    target = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    uid, gid = _uid(owner), _gid(group)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == len(data):
        with open(target, "rb") as existing:
            if existing.read() == data:
                return _fix_metadata(target, st, mode, uid, gid)

    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(target)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            if uid != -1 or gid != -1:
                os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)
    return True


def read_bytes(path: PathLike) -> bytes | None:
    """Return the content of ``path``, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_text(path: PathLike, encoding: str = "utf-8") -> str | None:
    """Return the text of ``path``, or None when it does not exist."""
    data = read_bytes(path)
    return None if data is None else data.decode(encoding)


def remove_file(path: PathLike) -> bool:
    """Remove the file (or symlink) at ``path``; return False when there was nothing to remove."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def ensure_directory(
    path: PathLike,
    mode: int = 0o755,
    *,
    owner: str | int | None = None,
    group: str | int | None = None,
) -> bool:
    """Make ``path`` a directory with ``mode`` (parents created 0755); return True if changed."""
    target = Path(path)
    uid, gid = _uid(owner), _gid(group)
    changed = False
    try:
        st = os.stat(target)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(target, mode)
            changed = True
        except FileExistsError:
            pass
        st = os.stat(target)
    if not stat.S_ISDIR(st.st_mode):
        raise HostError(f"{target} exists and is not a directory")
    return _fix_metadata(target, st, mode, uid, gid) or changed


def ensure_symlink(path: PathLike, target: str) -> bool:
    """Make ``path`` a symlink to ``target``, switching an existing link atomically.

    Returns:
        True if the link was created or now points somewhere else.
    """
    link = Path(path)
    try:
        if os.readlink(link) == target:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:  # EINVAL: exists but is not a symlink
        if os.path.isdir(link):
            raise HostError(f"{link} exists and is a directory, not a symlink") from exc
    link.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(link)
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return True

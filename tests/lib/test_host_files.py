"""kaji.host.files and Host path mapping: atomic, idempotent writes inside a root."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaji.host import (
    Host,
    HostError,
    PathEscapeError,
    ServiceError,
    ensure_directory,
    ensure_symlink,
    read_bytes,
    read_text,
    remove_file,
    write_file,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leak into modes if the code relied on it."""
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_creates_parents_and_content(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.conf"
    assert write_file(target, "hello\n") is True
    assert target.read_text() == "hello\n"
    assert read_text(target) == "hello\n"
    assert read_bytes(target) == b"hello\n"
    assert mode_of(target) == 0o644


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640, 0o755])
def test_modes_are_exact_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "key.pem"
    write_file(target, b"\x00secret", mode=mode)
    assert mode_of(target) == mode


def test_identical_content_is_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_file(target, "same")
    before = os.stat(target)
    assert write_file(target, "same") is False
    assert write_file(target, b"same") is False
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_mode_change_on_identical_content_is_a_change(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_file(target, "same", mode=0o644)
    inode = os.stat(target).st_ino
    assert write_file(target, "same", mode=0o600) is True
    assert mode_of(target) == 0o600
    assert os.stat(target).st_ino == inode, "a mode fix must not rewrite the file"
    assert write_file(target, "same", mode=0o600) is False


def test_new_content_replaces_the_file_atomically_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_file(target, "one")
    old_inode = os.stat(target).st_ino
    assert write_file(target, "two") is True
    assert target.read_text() == "two"
    assert os.stat(target).st_ino != old_inode, "content must arrive by rename, not in place"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_failed_write_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    write_file(target, "old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_file(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("precious")
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert write_file(link, "precious") is True  # same bytes, but a link is not a file
    assert not link.is_symlink()
    assert outside.read_text() == "precious"
    write_file(link, "new")
    assert outside.read_text() == "precious"


@needs_root
def test_owner_and_group_are_applied_and_corrected(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert write_file(target, "x", owner="nobody", group="nogroup", mode=0o600) is True
    st = os.stat(target)
    import grp
    import pwd

    assert st.st_uid == pwd.getpwnam("nobody").pw_uid
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid
    assert write_file(target, "x", owner="nobody", group="nogroup", mode=0o600) is False
    os.chown(target, 0, 0)
    assert write_file(target, "x", owner="nobody", group="nogroup", mode=0o600) is True
    assert os.stat(target).st_uid == pwd.getpwnam("nobody").pw_uid
    assert mode_of(target) == 0o600


def test_unknown_owner_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="unknown user"):
        write_file(tmp_path / "f", "x", owner="no-such-user-kaji")
    assert not (tmp_path / "f").exists()


def test_remove_and_read_missing(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert read_text(target) is None
    assert read_bytes(target) is None
    assert remove_file(target) is False
    write_file(target, "x")
    assert remove_file(target) is True
    assert not target.exists()


def test_ensure_directory(tmp_path: Path) -> None:
    d = tmp_path / "x" / "y"
    assert ensure_directory(d, 0o700) is True
    assert mode_of(d) == 0o700
    assert ensure_directory(d, 0o700) is False
    assert ensure_directory(d, 0o750) is True
    assert mode_of(d) == 0o750
    write_file(tmp_path / "file", "x")
    with pytest.raises(HostError, match="not a directory"):
        ensure_directory(tmp_path / "file")


def test_ensure_symlink_switches_atomically(tmp_path: Path) -> None:
    link = tmp_path / "current"
    assert ensure_symlink(link, "1.0") is True
    assert os.readlink(link) == "1.0"
    assert ensure_symlink(link, "1.0") is False
    assert ensure_symlink(link, "2.0") is True
    assert os.readlink(link) == "2.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current"]


# -- Host: path mapping and counters ---------------------------------------------------------


def test_sandbox_maps_machine_paths_under_the_root(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.is_sandbox
    assert host.path("/etc/kaji/x.conf") == tmp_path / "etc/kaji/x.conf"
    assert host.path("/") == tmp_path
    assert host.machine_path(tmp_path / "etc/kaji/x.conf") == "/etc/kaji/x.conf"
    assert host.write_file("/etc/kaji/x.conf", "v") is True
    assert (tmp_path / "etc/kaji/x.conf").read_text() == "v"
    assert host.read_text("/etc/kaji/x.conf") == "v"
    assert host.exists("/etc/kaji/x.conf")


@pytest.mark.parametrize(
    "machine_path", ["../../etc/passwd", "etc/passwd", "/etc/../../etc/passwd", "/a/..", "/x\0y"]
)
def test_sandbox_refuses_paths_escaping_the_root(tmp_path: Path, machine_path: str) -> None:
    host = Host(tmp_path / "root")
    with pytest.raises(PathEscapeError):
        host.path(machine_path)
    with pytest.raises(PathEscapeError):
        host.write_file(machine_path, "x")
    assert not (tmp_path / "etc").exists()


def test_sandbox_refuses_symlinks_leading_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to(tmp_path / "real-etc")
    (root / "inner").symlink_to("etc-dir")
    host = Host(root)
    with pytest.raises(PathEscapeError, match="outside"):
        host.write_file("/etc/passwd", "pwned")
    assert not (tmp_path / "real-etc").exists()
    assert host.path("/inner/x") == root / "inner/x"  # a link inside the root is fine


def test_production_root_uses_paths_as_they_are() -> None:
    host = Host("/", services=None)
    assert not host.is_sandbox
    assert host.path("/etc/hostname") == Path("/etc/hostname")
    with pytest.raises(PathEscapeError):
        host.path("relative/path")
    with pytest.raises(PathEscapeError):
        host.path("/etc/../root")


def test_a_real_machine_host_without_a_manager_runs_no_services() -> None:
    host = Host("/")  # (only calls that would not change this machine if they did run)
    with pytest.raises(ServiceError, match="no service manager"):
        host.services.reload("kaji-test-no-such-service")
    with pytest.raises(ServiceError, match="no service manager"):
        host.services.is_running("kaji-test-no-such-service")
    assert not host.services.runs_processes
    assert host.stats.services_started == 0


def test_host_counts_only_real_changes(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.write_file("/etc/a", "1")
    host.write_file("/etc/a", "1")
    host.write_file("/etc/a", "1", mode=0o600)
    host.remove_file("/etc/a")
    host.remove_file("/etc/a")
    assert host.stats.files_written == 2
    assert host.stats.files_removed == 1
    host.stats.reset()
    assert host.stats.as_dict()["files_written"] == 0


def test_sandbox_ignores_owners_that_only_exist_on_real_machines(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.write_file("/etc/etcd/key.pem", "k", mode=0o600, owner="etcd-kaji-missing")
    assert mode_of(tmp_path / "etc/etcd/key.pem") == 0o600
    strict = Host(tmp_path, apply_ownership=True)
    with pytest.raises(HostError, match="unknown user"):
        strict.write_file("/etc/etcd/other.pem", "k", owner="etcd-kaji-missing")


def test_host_from_environment_picks_the_sandbox_and_its_manager(tmp_path: Path) -> None:
    from kaji.host import ProcessManager, RecordingManager, SystemdManager, host_from_environment

    production = host_from_environment({})
    assert not production.is_sandbox
    assert production.loopback_address == "127.0.0.1"
    assert isinstance(production.services.manager, SystemdManager)
    assert production.services.manager.host is production  # unit files counted in its stats
    recorded = host_from_environment({"KAJI_HOST_ROOT": str(tmp_path)})
    assert recorded.is_sandbox
    assert recorded.path("/etc/x") == tmp_path / "etc/x"
    assert isinstance(recorded.services.manager, RecordingManager)
    real = host_from_environment(
        {
            "KAJI_HOST_ROOT": str(tmp_path),
            "KAJI_HOST_PROCESSES": "1",
            "KAJI_HOST_LOOPBACK": "127.0.1.7",
        }
    )
    assert isinstance(real.services.manager, ProcessManager)
    assert real.loopback_address == "127.0.1.7"
    assert real.hostname == socket.gethostname()
    named = host_from_environment({"KAJI_HOST_ROOT": str(tmp_path), "KAJI_HOST_HOSTNAME": "m-3"})
    assert named.hostname == "m-3"

"""kaji.packages: apt on a real machine only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kaji import packages
from kaji.host import CommandResult, Host, HostError


def test_sandbox_hosts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="sandbox"):
        packages.ensure_packages(Host(tmp_path), ["containerd"])


def test_invalid_names_are_refused() -> None:
    with pytest.raises(HostError, match="invalid package name"):
        packages.missing_packages(Host("/"), ["-oDebug=1"])


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query (Debian)")
def test_missing_packages_asks_dpkg() -> None:
    assert packages.missing_packages(Host("/"), ["dpkg", "kaji-no-such-package"]) == [
        "kaji-no-such-package"
    ]


class RecordingHost(Host):
    """A production Host whose commands are recorded, never run."""

    def __init__(self, installed: set[str]) -> None:
        super().__init__("/")
        self.installed = installed
        self.commands: list[list[str]] = []

    def run(self, argv, **kwargs):  # type: ignore[no-untyped-def, override]
        argv = [str(a) for a in argv]
        self.commands.append(argv)
        if argv[0] == "dpkg-query":
            ok = argv[-1] in self.installed
            return CommandResult(
                tuple(argv), 0 if ok else 1, "install ok installed" if ok else "", ""
            )
        return CommandResult(tuple(argv), 0, "", "")


def test_only_missing_packages_are_installed() -> None:
    host = RecordingHost({"runc"})
    assert packages.ensure_packages(host, ["containerd", "runc"]) == ["containerd"]
    apt = [c for c in host.commands if c[0] == "apt-get"]
    assert apt[0][:2] == ["apt-get", "update"]
    assert apt[1][-1] == "containerd"
    assert "runc" not in apt[1]
    host.commands.clear()
    host.installed.add("containerd")
    assert packages.ensure_packages(host, ["containerd", "runc"]) == []
    assert all(c[0] == "dpkg-query" for c in host.commands)

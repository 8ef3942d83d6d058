"""Distribution packages (apt) on a real machine.

Only a production Host installs packages: a sandbox Host (tests, the offline model) never
touches the machine's package database, so every function here refuses one with HostError.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kaji.host.errors import HostError

if TYPE_CHECKING:
    from kaji.host import Host

_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "l"}


def _check(host: Host, names: Sequence[str]) -> None:
    if host.is_sandbox:
        raise HostError("distribution packages are not installed into a sandbox")
    if isinstance(names, str):
        raise TypeError("names must be a list of package names, not a string")
    for name in names:
        if not _PACKAGE.fullmatch(name):
            raise HostError(f"invalid package name {name!r}")


def missing_packages(host: Host, names: Sequence[str]) -> list[str]:
    """The packages among ``names`` that are not installed, in the given order."""
    _check(host, names)
    missing = []
    for name in names:
        result = host.run(["dpkg-query", "-W", "-f=${Status}", name], check=False)
        if not (result.ok and result.stdout.strip().endswith(" installed")):
            missing.append(name)
    return missing


def ensure_packages(host: Host, names: Sequence[str], *, timeout: float = 900) -> list[str]:
    """Install the packages that are missing; return the ones this call installed.

    Raises:
        CommandError: apt-get failed.
    """
    missing = missing_packages(host, names)
    if missing:
        host.run(["apt-get", "update", "-q"], env=_APT_ENV, timeout=timeout)
        host.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            env=_APT_ENV,
            timeout=timeout,
        )
    return missing


def purge_packages(host: Host, names: Sequence[str], *, timeout: float = 900) -> list[str]:
    """Purge the installed packages among ``names``; return the ones this call removed."""
    _check(host, names)
    installed = [n for n in names if n not in missing_packages(host, names)]
    if installed:
        host.run(["apt-get", "purge", "-y", "-q", *installed], env=_APT_ENV, timeout=timeout)
    return installed

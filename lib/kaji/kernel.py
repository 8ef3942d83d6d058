"""Kernel prerequisites a node needs: modules loaded at boot and sysctl settings.

Both are written as files (``/etc/modules-load.d/<name>.conf``, ``/etc/sysctl.d/<name>.conf``)
so they survive a reboot, and applied at once with ``modprobe``/``sysctl`` only on a real
machine (a sandbox Host gets the files and nothing else). Applying can fail where the kernel
is not ours to change (a container): that is reported, not raised, so the charm can log it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaji.host import Host

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_MODULE = re.compile(r"[A-Za-z0-9_-]+")
_SYSCTL_KEY = re.compile(r"[a-z0-9_]+(?:[./][A-Za-z0-9_-]+)+")
_SYSCTL_VALUE = re.compile(r"[A-Za-z0-9 _.:,-]+")

#: What every Kubernetes node needs: bridged and forwarded traffic seen by iptables.
NODE_MODULES = ("br_netfilter", "overlay")
NODE_SYSCTLS = {
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.ipv4.ip_forward": "1",
}


@dataclass(frozen=True)
class KernelResult:
    """What ``ensure_kernel_settings`` did."""

    #: True if a file was written (and, on a real machine, the settings applied).
    changed: bool
    #: Settings that could not be applied now (they still apply at the next boot).
    problems: tuple[str, ...] = field(default=())


def modules_path(name: str) -> str:
    """The machine path of the modules-load.d file for ``name``."""
    return f"/etc/modules-load.d/{_checked_name(name)}.conf"


def sysctl_path(name: str) -> str:
    """The machine path of the sysctl.d file for ``name``."""
    return f"/etc/sysctl.d/{_checked_name(name)}.conf"


def _checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid settings file name {name!r}")
    return name


def render_modules(modules: Sequence[str]) -> str:
    """The modules-load.d file: one module per line."""
    for module in modules:
        if not _MODULE.fullmatch(module):
            raise ValueError(f"invalid kernel module name {module!r}")
    return "# Managed by kaji: local changes are overwritten.\n" + "".join(
        f"{m}\n" for m in modules
    )


def render_sysctls(settings: Mapping[str, str]) -> str:
    """The sysctl.d file: ``key = value`` lines, sorted."""
    lines = ["# Managed by kaji: local changes are overwritten."]
    for key, value in sorted(settings.items()):
        if not _SYSCTL_KEY.fullmatch(key) or not _SYSCTL_VALUE.fullmatch(value):
            raise ValueError(f"invalid sysctl setting {key!r} = {value!r}")
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def ensure_kernel_settings(
    host: Host,
    name: str,
    modules: Sequence[str] = NODE_MODULES,
    sysctls: Mapping[str, str] = NODE_SYSCTLS,
) -> KernelResult:
    """Write the module and sysctl files for ``name``; apply them on a real machine.

    Modules are loaded before the sysctls are applied (``net.bridge.*`` exists only once
    ``br_netfilter`` is loaded). A module already loaded is not probed again.
    """
    modules_changed = host.write_file(modules_path(name), render_modules(modules))
    sysctls_changed = host.write_file(sysctl_path(name), render_sysctls(sysctls))
    if host.is_sandbox or not (modules_changed or sysctls_changed):
        return KernelResult(modules_changed or sysctls_changed)
    problems = []
    for module in modules:
        if host.exists(f"/sys/module/{module}"):
            continue
        result = host.run(["modprobe", module], check=False)
        if not result.ok:
            problems.append(f"modprobe {module}: {result.stderr.strip() or result.returncode}")
    result = host.run(["sysctl", "--load", sysctl_path(name)], check=False)
    if not result.ok:
        problems.append(f"sysctl: {result.stderr.strip() or result.returncode}")
    return KernelResult(True, tuple(problems))


def remove_kernel_settings(host: Host, name: str) -> bool:
    """Remove the files ``ensure_kernel_settings`` wrote (the running kernel is left as is)."""
    removed = host.remove_file(modules_path(name))
    return host.remove_file(sysctl_path(name)) or removed

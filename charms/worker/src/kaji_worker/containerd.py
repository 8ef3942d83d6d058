"""containerd: its config for this host's cgroup driver, registry mirrors, and its service.

Every path in the config is built with ``Host.path``, so a sandboxed containerd keeps its
root, state and socket under the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kaji.host import ServiceSpec

if TYPE_CHECKING:
    from kaji.host import Host

SERVICE = "containerd"
CONFIG = "/etc/containerd/config.toml"
HOSTS_DIR = "/etc/containerd/certs.d"
ROOT = "/var/lib/containerd"
STATE = "/run/containerd"
SOCKET = "/run/containerd/containerd.sock"
OPT = "/opt/containerd"
#: Systemd settings containerd needs that a ServiceSpec does not carry: restarting containerd
#: must not kill the containers (their shims live in its cgroup), and it manages cgroups.
DROP_IN = "/etc/systemd/system/containerd.service.d/10-kaji.conf"
DROP_IN_TEXT = """\
# Managed by kaji: local changes are overwritten.
[Service]
Delegate=yes
KillMode=process
OOMScoreAdjust=-999
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
"""
HEADER = "# Managed by kaji (worker charm): local changes are overwritten.\n"


@dataclass(frozen=True)
class ContainerdBinaries:
    """Where containerd, its runc shim's runc and the CNI plugins are (real paths)."""

    containerd: str
    runc: str
    cni_bin_dir: str
    #: Directories put first on containerd's PATH (its shim, runc).
    path_dirs: tuple[str, ...] = ()


def cgroup_driver(host: Host) -> str:
    """``systemd`` on a cgroup v2 host booted by systemd, else ``cgroupfs``.

    The kubelet is given the same driver (KubeletConfiguration ``cgroupDriver``).
    """
    unified = host.exists("/sys/fs/cgroup/cgroup.controllers")
    booted_by_systemd = host.exists("/run/systemd/system")
    return "systemd" if unified and booted_by_systemd else "cgroupfs"


def _toml(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML escapes)."""
    return json.dumps(value, ensure_ascii=False)


def render_config(
    host: Host,
    *,
    binaries: ContainerdBinaries,
    sandbox_image: str,
    cgroup_driver: str,
    cni_conf_dir: str,
) -> str:
    """The containerd (config version 2) file for this host."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    runc = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
    lines = [
        HEADER.rstrip("\n"),
        "version = 2",
        f"root = {_toml(str(host.path(ROOT)))}",
        f"state = {_toml(str(host.path(STATE)))}",
        "",
        "[grpc]",
        f"  address = {_toml(str(host.path(SOCKET)))}",
        "",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {_toml(str(host.path(OPT)))}",
        "",
        cri,
        f"  sandbox_image = {_toml(sandbox_image)}",
        "",
        '[plugins."io.containerd.grpc.v1.cri".containerd]',
        '  default_runtime_name = "runc"',
        "",
        runc,
        '  runtime_type = "io.containerd.runc.v2"',
        "",
        runc[:-1] + ".options]",
        f"  BinaryName = {_toml(binaries.runc)}",
        f"  Root = {_toml(str(host.path(STATE + '/runc')))}",
        f"  SystemdCgroup = {'true' if cgroup_driver == 'systemd' else 'false'}",
        "",
        '[plugins."io.containerd.grpc.v1.cri".cni]',
        f"  bin_dir = {_toml(binaries.cni_bin_dir)}",
        f"  conf_dir = {_toml(str(host.path(cni_conf_dir)))}",
        "",
        '[plugins."io.containerd.grpc.v1.cri".registry]',
        f"  config_path = {_toml(str(host.path(HOSTS_DIR)))}",
        "",
    ]
    return "\n".join(lines)


def registry_server(registry: str) -> str:
    """The upstream a registry's hosts.toml falls back to."""
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    return f"https://{registry}"


def render_hosts_toml(registry: str, mirrors: Sequence[str]) -> str:
    """``certs.d/<registry>/hosts.toml``: try each mirror in order, then the registry.

    The directory is named as the registry is written in image references (``host:port``);
    ``_default`` applies to every registry without a directory of its own.
    """
    lines = [HEADER.rstrip("\n")]
    if registry != "_default":
        lines.append(f"server = {_toml(registry_server(registry))}")
    for url in mirrors:
        lines += ["", f"[host.{_toml(url)}]", '  capabilities = ["pull", "resolve"]']
        if urlsplit(url).scheme == "http":
            lines.append("  skip_verify = true")
    return "\n".join(lines) + "\n"


def ensure_mirrors(host: Host, mirrors: Mapping[str, Sequence[str]]) -> bool:
    """Make ``certs.d`` hold exactly one hosts.toml per configured registry; True if changed.

    containerd reads these files on every pull: no restart is needed.
    """
    changed = False
    for registry, urls in sorted(mirrors.items()):
        path = f"{HOSTS_DIR}/{registry}/hosts.toml"
        changed |= host.write_file(path, render_hosts_toml(registry, urls))
    base = host.path(HOSTS_DIR)
    if base.is_dir():
        wanted = set(mirrors)
        for entry in sorted(base.iterdir()):
            hosts = f"{HOSTS_DIR}/{entry.name}/hosts.toml"
            if entry.name not in wanted and host.exists(hosts):
                text = host.read_text(hosts) or ""
                if text.startswith(HEADER):  # only ours
                    changed |= host.remove_file(hosts)
                    if not any(entry.iterdir()):
                        entry.rmdir()
    return changed


def service_spec(
    host: Host,
    binaries: ContainerdBinaries,
    *,
    proxy_environment: Mapping[str, str] | None = None,
) -> ServiceSpec:
    """The containerd service; it restarts only when its config file or environment changes.

    ``proxy_environment`` (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``: the model's proxies,
    from ``ProxySettings.environment``) is what containerd's image pulls go through.
    """
    path = ":".join((*binaries.path_dirs, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"))
    return ServiceSpec(
        SERVICE,
        [binaries.containerd, "--config", str(host.path(CONFIG))],
        description="containerd container runtime (kaji)",
        environment={**(proxy_environment or {}), "PATH": path + ":/sbin:/bin"},
        after=("network.target", "local-fs.target"),
        watched_files=(str(host.path(CONFIG)),),
        limit_nofile=1048576,
        restart_sec=5,
    )

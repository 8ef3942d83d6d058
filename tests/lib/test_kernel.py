"""kaji.kernel: persistent kernel prerequisites, applied only on a real machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaji import kernel
from kaji.host import CommandResult, Host


def test_sandbox_gets_the_files_and_runs_nothing(tmp_path: Path) -> None:
    host = Host(tmp_path)
    result = kernel.ensure_kernel_settings(host, "kaji-test")
    assert result == kernel.KernelResult(True)
    modules = host.read_text("/etc/modules-load.d/kaji-test.conf") or ""
    assert modules.splitlines()[1:] == ["br_netfilter", "overlay"]
    sysctls = host.read_text("/etc/sysctl.d/kaji-test.conf") or ""
    assert "net.bridge.bridge-nf-call-iptables = 1" in sysctls
    assert "net.ipv4.ip_forward = 1" in sysctls
    assert host.stats.commands_run == 0
    assert kernel.ensure_kernel_settings(host, "kaji-test") == kernel.KernelResult(False)
    assert kernel.remove_kernel_settings(host, "kaji-test")
    assert not host.exists("/etc/sysctl.d/kaji-test.conf")
    assert not host.exists("/etc/modules-load.d/kaji-test.conf")


class FakeMachine:
    """Just enough of a production Host: files in memory, commands recorded."""

    is_sandbox = False

    def __init__(self, loaded: set[str], failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.files: dict[str, str] = {}
        self.loaded = loaded
        self.failing = failing
        self.commands: list[list[str]] = []

    def write_file(self, path: str, content: str, **_: object) -> bool:
        changed = self.files.get(path) != content
        self.files[path] = content
        return changed

    def exists(self, path: str) -> bool:
        return path.removeprefix("/sys/module/") in self.loaded

    def run(self, argv: list[str], **_: object) -> CommandResult:
        self.commands.append(list(argv))
        code = 1 if argv[-1] in self.failing else 0
        return CommandResult(tuple(argv), code, "", "denied" if code else "")


def test_real_machine_loads_missing_modules_then_applies_sysctls() -> None:
    machine = FakeMachine(loaded={"overlay"})
    result = kernel.ensure_kernel_settings(machine, "kaji-worker")  # type: ignore[arg-type]
    assert result == kernel.KernelResult(True)
    assert machine.commands == [
        ["modprobe", "br_netfilter"],
        ["sysctl", "--load", "/etc/sysctl.d/kaji-worker.conf"],
    ]
    machine.commands.clear()
    kernel.ensure_kernel_settings(machine, "kaji-worker")  # type: ignore[arg-type]
    assert machine.commands == []  # unchanged files: nothing applied again


def test_failures_to_apply_are_reported_not_raised() -> None:
    machine = FakeMachine(loaded=set(), failing={"br_netfilter"})
    result = kernel.ensure_kernel_settings(machine, "kaji-worker")  # type: ignore[arg-type]
    assert result.problems == ("modprobe br_netfilter: denied",)


@pytest.mark.parametrize(
    ("modules", "sysctls"),
    [(["bad module"], {}), ([], {"net.ipv4.ip_forward": "1\nkernel.x = 1"}), ([], {"x": "1"})],
)
def test_bad_names_and_values_are_refused(
    tmp_path: Path, modules: list[str], sysctls: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="invalid"):
        kernel.ensure_kernel_settings(Host(tmp_path), "kaji-test", modules, sysctls)

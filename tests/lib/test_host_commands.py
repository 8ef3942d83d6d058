"""kaji.host.commands: argv-only command runner with timeouts that kill the process group."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from kaji.host import CommandError, CommandTimeout, CommandTimeoutError, Host, run
from kaji.host.processes import process_start_time


def test_run_returns_output_and_status() -> None:
    result = run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert result.returncode == 0
    assert result.ok
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.argv == (sys.executable, "-c", result.argv[2])


def test_input_is_fed_to_stdin_and_env_is_merged() -> None:
    result = run(
        [
            sys.executable,
            "-c",
            "import os, sys; "
            "print(sys.stdin.read().upper(), os.environ['KAJI_X'], 'PATH' in os.environ)",
        ],
        input="hello",
        env={"KAJI_X": "42"},
    )
    assert result.stdout.split() == ["HELLO", "42", "True"]


def test_non_zero_exit_raises_command_error_with_stderr() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('disk on fire\\n'); sys.exit(3)"]
    with pytest.raises(CommandError) as info:
        run(argv)
    assert info.value.result.returncode == 3
    assert info.value.result.stderr == "disk on fire\n"
    assert "disk on fire" in str(info.value)
    assert "status 3" in str(info.value)


def test_non_zero_exit_without_check_returns_result() -> None:
    result = run(["/bin/sh", "-c", "exit 7"], check=False)
    assert result.returncode == 7
    assert not result.ok


def test_long_stderr_is_truncated_in_message_but_kept_in_result() -> None:
    script = "import sys; sys.stderr.write('x' * 10000 + 'END'); sys.exit(1)"
    with pytest.raises(CommandError) as info:
        run([sys.executable, "-c", script])
    assert len(info.value.result.stderr) == 10003
    assert len(str(info.value)) < 2500
    assert str(info.value).endswith("END")


def test_timeout_raises_and_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 30 & echo $! > {pid_file}; echo started; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError) as info:
        run(["/bin/sh", "-c", script], timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.timeout == 0.5
    assert "timed out after 0.5s" in str(info.value)
    assert info.value.result.stdout == "started\n"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while process_start_time(grandchild) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process_start_time(grandchild) is None, "the backgrounded sleep survived the timeout"


def test_timeout_is_a_command_error_and_has_the_short_alias() -> None:
    assert CommandTimeout is CommandTimeoutError
    with pytest.raises(CommandError):
        run(["sleep", "5"], timeout=0.2, check=False)


def test_missing_program_is_status_127() -> None:
    with pytest.raises(CommandError) as info:
        run(["/nonexistent/kaji-binary"])
    assert info.value.result.returncode == 127
    assert "No such file" in info.value.result.stderr
    assert run(["/nonexistent/kaji-binary"], check=False).returncode == 127


def test_a_string_is_refused_because_there_is_no_shell() -> None:
    with pytest.raises(TypeError):
        run("echo hi")
    with pytest.raises(ValueError, match="empty"):
        run([])


def test_cwd_is_used(tmp_path: Path) -> None:
    assert run(["pwd"], cwd=tmp_path).stdout.strip() == os.path.realpath(tmp_path)


def test_host_run_counts_commands(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.run(["true"])
    host.run(["false"], check=False)
    assert host.stats.commands_run == 2

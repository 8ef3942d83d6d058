"""Running commands: the one place in kaji that starts processes.

Commands are argv lists, never shell strings. Every command runs in a session of its own, so a
timeout kills the whole process group rather than leaving grandchildren behind.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kaji.host.errors import HostError

#: How much of a failed command's stderr goes into the exception message.
_STDERR_TAIL_CHARS = 2000

#: Processes started by spawn() that this interpreter still has to reap.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.returncode == 0


class CommandError(HostError):
    """A command exited with a non-zero status (or could not be started at all)."""

    def __init__(self, result: CommandResult, message: str | None = None) -> None:
        self.result = result
        super().__init__(message or self._describe(result))

    @staticmethod
    def _describe(result: CommandResult) -> str:
        tail = _tail(result.stderr) or _tail(result.stdout)
        text = f"command {shlex.join(result.argv)!r} exited with status {result.returncode}"
        return f"{text}: {tail}" if tail else text


class CommandTimeoutError(CommandError):
    """A command ran longer than its timeout; its whole process group was killed."""

    def __init__(self, result: CommandResult, timeout: float) -> None:
        self.timeout = timeout
        tail = _tail(result.stderr)
        text = f"command {shlex.join(result.argv)!r} timed out after {timeout:g}s"
        super().__init__(result, f"{text}: {tail}" if tail else text)


#: Short alias.
CommandTimeout = CommandTimeoutError


def _tail(text: str) -> str:
    text = text.strip()
    if len(text) > _STDERR_TAIL_CHARS:
        text = "..." + text[-_STDERR_TAIL_CHARS:]
    return text


def _argv(argv: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of arguments, not a string (no shell is used)")
    args = tuple(os.fspath(a) for a in argv)
    if not args:
        raise ValueError("argv must not be empty")
    for arg in args:
        if not isinstance(arg, str):
            raise TypeError(f"argv items must be str, got {arg!r}")
        if "\0" in arg:
            raise ValueError(f"argv item contains a NUL byte: {arg!r}")
    return args


def signal_process_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to process group ``pid``; a group that is already gone is ignored."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 60,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: str | os.PathLike[str] | None = None,
) -> CommandResult:
    """Run a command to completion and return its status and output.

    Args:
        argv: the program and its arguments; the program is looked up on PATH.
        timeout: seconds before the command's process group is killed.
        input: text fed to the command's stdin (stdin is /dev/null otherwise).
        env: variables added to (or overriding) the inherited environment.
        check: raise CommandError when the command exits non-zero.
        cwd: working directory of the command.

    Raises:
        CommandTimeoutError: the command ran longer than ``timeout`` (always raised).
        CommandError: the command exited non-zero, or could not be started, and ``check``.
    """
    args = _argv(argv)
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except OSError as exc:
        result = CommandResult(args, 127, "", f"{args[0]}: {exc.strerror or exc}")
        if check:
            raise CommandError(result) from exc
        return result
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_process_group(proc.pid)
        stdout, stderr = _collect_after_kill(proc)
        result = CommandResult(args, proc.returncode, stdout, stderr)
        raise CommandTimeoutError(result, timeout) from None
    except BaseException:
        signal_process_group(proc.pid)
        _collect_after_kill(proc)
        raise
    result = CommandResult(args, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise CommandError(result)
    return result


def _collect_after_kill(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Gather what a killed command wrote, without waiting forever on leaked pipes."""
    try:
        stdout, stderr = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # Something outside the process group still holds the pipes open.
        proc.kill()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()
        return "", ""
    return stdout or "", stderr or ""


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    log_path: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    limit_nofile: int | None = None,
) -> int:
    """Start a long-running process in a new session and return its pid.

    The process gets exactly ``env`` as its environment, /dev/null as stdin, and ``log_path``
    (opened for appending) as stdout and stderr. It is not waited for; call ``reap`` to collect
    its exit status once it is gone.

    Raises:
        HostError: the program could not be started.
    """
    args = _argv(argv)
    preexec = None
    if limit_nofile is not None:
        preexec = _nofile_setter(limit_nofile)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                preexec_fn=preexec,  # only setrlimit: safe between fork and exec
            )
        except OSError as exc:
            raise HostError(f"cannot start {shlex.join(args)!r}: {exc.strerror or exc}") from exc
    _children[proc.pid] = proc
    return proc.pid


def _nofile_setter(limit: int) -> Callable[[], None]:
    def set_nofile() -> None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
        except (ValueError, OSError):
            capped = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (capped, hard))

    return set_nofile


def reap(pid: int) -> int | None:
    """Collect the exit status of a child of this process that has exited.

    Returns the exit status (negative for a signal) when ``pid`` was our child and has exited,
    None when it is still running or is not our child.
    """
    proc = _children.get(pid)
    if proc is not None:
        code = proc.poll()
        if code is not None:
            del _children[pid]
        return code
    try:
        found, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if found == 0:
        return None
    return os.waitstatus_to_exitcode(status)

"""kaji.host services: ServiceSpec, systemd rendering (checked by systemd itself) and managers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kaji.host import (
    Host,
    ProcessManager,
    RecordingManager,
    ServiceChange,
    ServiceError,
    ServiceSpec,
    SystemdManager,
    render_systemd_unit,
    service_fingerprint,
)
from kaji.host.processes import process_start_time

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


# -- ServiceSpec -------------------------------------------------------------------------------


def test_spec_normalises_and_is_hashable() -> None:
    a = ServiceSpec("etcd", ["/usr/bin/etcd", "--name", "e0"], environment={"B": "2", "A": "1"})
    b = ServiceSpec(
        "etcd", ("/usr/bin/etcd", "--name", "e0"), environment=[("A", "1"), ("B", "2")]
    )
    assert a == b
    assert hash(a) == hash(b)
    assert a.environment == (("A", "1"), ("B", "2"))
    assert a.env == {"A": "1", "B": "2"}
    assert a.argv == ("/usr/bin/etcd", "--name", "e0")
    assert a.unit_name == "etcd.service"
    assert ServiceSpec.from_dict(json.loads(json.dumps(a.to_dict()))) == a


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "etcd", "argv": ["etcd"]}, "absolute"),
        ({"name": "etcd", "argv": []}, "empty"),
        ({"name": "../etc", "argv": ["/bin/true"]}, "invalid service name"),
        ({"name": "etcd.service", "argv": ["/bin/true"]}, "invalid service name"),
        ({"name": "e", "argv": ["/bin/true"], "environment": {"A-B": "x"}}, "environment name"),
        ({"name": "e", "argv": ["/bin/true"], "restart": "sometimes"}, "restart"),
        ({"name": "e", "argv": ["/bin/true"], "after": ["bad unit"]}, "unit name"),
        ({"name": "e", "argv": ["/bin/true"], "description": "a\nb"}, "control"),
        ({"name": "e", "argv": ["/bin/true"], "watched_files": ["rel.conf"]}, "absolute"),
        ({"name": "e", "argv": ["/bin/true"], "user": "bad user"}, "user"),
    ],
)
def test_spec_rejects_invalid_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceSpec(**kwargs)


def test_fingerprint_tracks_spec_and_watched_file_content(tmp_path: Path) -> None:
    conf = tmp_path / "svc.conf"
    spec = ServiceSpec("svc", ["/bin/true"], watched_files=[conf])
    absent = service_fingerprint(spec)
    conf.write_text("a")
    first = service_fingerprint(spec)
    assert first != absent
    os.utime(conf, (1, 1))
    assert service_fingerprint(spec) == first, "only content counts, not mtime"
    conf.write_text("b")
    assert service_fingerprint(spec) != first
    assert service_fingerprint(ServiceSpec("svc", ["/bin/true", "-x"], watched_files=[conf])) != (
        service_fingerprint(spec)
    )


# -- systemd rendering, checked with the real systemd-analyze ---------------------------------

RENDER_CASES = [
    ServiceSpec("plain", ["/usr/bin/sleep", "infinity"]),
    ServiceSpec(
        "tricky-args",
        [
            "/usr/bin/sleep",
            "with space",
            'double"quote',
            "single'quote",
            "100%",
            "%n",
            "$HOME",
            "${HOME}",
            "back\\slash",
            ";",
            "",
            "new\nline",
            "tab\there",
            "ünïcode",
            "--flag=a b",
        ],
        description="Tricky 100% $HOME",
    ),
    ServiceSpec(
        "etcd-like",
        ["/usr/bin/sleep", "--data-dir=/var/lib/etcd data", "--initial-cluster=a=https://x:2380"],
        environment={
            "SPACES": "value with spaces",
            "QUOTES": "say \"hi\" 'there'",
            "DOLLAR": "$NOT_EXPANDED ${EITHER}",
            "PERCENT": "50% %n",
            "BACKSLASH": "C:\\path\\",
            "EMPTY": "",
        },
        description="etcd member e0",
        user="root",
        group="root",
        after=["network-online.target", "kaji-other.service"],
        requires=["kaji-other.service"],
        wants=["network-online.target"],
        restart="on-failure",
        restart_sec=0.5,
        working_directory="/tmp",
        limit_nofile=65536,
        type="notify",
        reload_signal="HUP",
    ),
]


def _unquote_dumped_command_line(line: str) -> list[str]:
    """Parse the 'Command Line:' systemd dumps (shell-style quoting with C escapes)."""
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$", "`": "`"}
    args: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        quoted = line[i] == '"'
        i += quoted
        word: list[str] = []
        while i < len(line) and (line[i] != '"' if quoted else line[i] != " "):
            if line[i] == "\\":
                if line[i + 1] == "x":
                    word.append(chr(int(line[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                word.append(escapes[line[i + 1]])
                i += 2
            else:
                word.append(line[i])
                i += 1
        i += quoted
        args.append("".join(word))
    return args


def _verify(unit_dir: Path, spec: ServiceSpec, level: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": level}
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit_dir / spec.unit_name)],
        capture_output=True,
        text=True,
        env=env,
        cwd=unit_dir,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("spec", RENDER_CASES, ids=lambda s: s.name)
def test_rendered_unit_passes_systemd_verify_and_round_trips(
    tmp_path: Path, spec: ServiceSpec
) -> None:
    # Units the spec depends on must exist for verify to be happy.
    (tmp_path / "kaji-other.service").write_text("[Service]\nExecStart=/usr/bin/sleep 1\n")
    (tmp_path / spec.unit_name).write_text(render_systemd_unit(spec))

    plain = _verify(tmp_path, spec, "info")
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr == ""

    # At debug level systemd dumps how it parsed the unit: every argument and variable must
    # arrive exactly, and the parser must not have warned about any line of our file.
    debug = _verify(tmp_path, spec, "debug")
    assert debug.returncode == 0
    lines = debug.stdout.splitlines() + debug.stderr.splitlines()
    assert not [
        line for line in lines if f"{spec.unit_name}:" in line and "/" in line.split(":")[0]
    ]
    unit_dump = "\n".join(lines)[("\n".join(lines)).index(f"-> Unit {spec.unit_name}:") :]
    command_lines = [
        line.split("Command Line: ", 1)[1]
        for line in unit_dump.splitlines()
        if "Command Line:" in line
    ]
    # $ survives parsing as $$ and becomes $ at exec time (variable expansion).
    assert _unquote_dumped_command_line(command_lines[0]) == [
        arg.replace("$", "$$") for arg in spec.argv
    ]
    dumped_env = [
        line.split("Environment: ", 1)[1]
        for line in unit_dump.splitlines()
        if line.strip().startswith("Environment:")
    ]
    assert dumped_env == [f"{k}={v}" for k, v in spec.environment]
    description = next(line for line in unit_dump.splitlines() if "Description:" in line)
    assert description.split("Description: ", 1)[1] == (spec.description or spec.name)


def test_rendered_unit_fields() -> None:
    text = render_systemd_unit(RENDER_CASES[2])
    assert "WantedBy=multi-user.target" in text
    assert "Type=notify" in text
    assert "Restart=on-failure" in text
    assert "RestartSec=0.5" in text
    assert "LimitNOFILE=65536" in text
    assert "ExecReload=/bin/kill -s HUP $MAINPID" in text
    assert "After=network-online.target kaji-other.service" in text
    assert "ExecReload" not in render_systemd_unit(RENDER_CASES[0])


# -- RecordingManager ------------------------------------------------------------------------


def test_recording_manager_fingerprint_logic(tmp_path: Path) -> None:
    conf = tmp_path / "svc.conf"
    conf.write_text("v1")
    manager = RecordingManager(tmp_path / "state")
    assert manager.runs_processes is False
    spec = ServiceSpec("svc", ["/usr/bin/svc"], watched_files=[conf], reload_signal="HUP")
    assert manager.is_running("svc") is False
    assert manager.ensure(spec) is ServiceChange.STARTED
    assert manager.is_running("svc")
    assert manager.ensure(spec) is ServiceChange.UNCHANGED
    conf.write_text("v2")
    assert manager.ensure(spec) is ServiceChange.RESTARTED
    changed = ServiceSpec(
        "svc", ["/usr/bin/svc", "--v"], watched_files=[conf], reload_signal="HUP"
    )
    assert manager.ensure(changed) is ServiceChange.RESTARTED
    assert manager.ensure(changed) is ServiceChange.UNCHANGED
    manager.reload("svc")
    assert RecordingManager(tmp_path / "state").record("svc") == {
        "running": True,
        "starts": 1,
        "restarts": 2,
        "reloads": 1,
    }
    assert manager.get("svc") == changed
    assert manager.list() == ["svc"]
    assert manager.stop("svc") is True
    assert manager.stop("svc") is False
    with pytest.raises(ServiceError):
        manager.reload("svc")
    assert manager.ensure(changed) is ServiceChange.STARTED
    assert manager.remove("svc") is True
    assert manager.list() == []
    assert manager.get("svc") is None


def test_sandbox_host_defaults_to_recording_and_counts(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.services.runs_processes is False
    spec = ServiceSpec("svc", ["/usr/bin/svc"])
    host.services.ensure(spec)
    host.services.ensure(spec)
    host.services.ensure(ServiceSpec("svc", ["/usr/bin/svc", "-v"]))
    host.services.stop("svc")
    assert (tmp_path / "var/lib/kaji/services/svc.json").exists()
    assert host.stats.services_started == 1
    assert host.stats.services_restarted == 1
    assert host.stats.services_stopped == 1
    assert host.services.record("svc")["restarts"] == 1  # extras reach the wrapped manager


# -- ProcessManager: real processes ----------------------------------------------------------

DAEMON = textwrap.dedent(
    """
    import os, signal, sys, time
    out = sys.argv[1]
    def note(text):
        with open(out, "a") as f:
            f.write(text + "\\n")
    signal.signal(signal.SIGHUP, lambda *_: note(f"hup {os.getpid()}"))
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    note(f"start {os.getpid()} {os.environ.get('GREETING', '')}")
    while True:
        time.sleep(0.05)
    """
)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessManager]:
    manager = ProcessManager(tmp_path / "services", stop_timeout=2)
    try:
        yield manager
    finally:
        for name in manager.list():
            manager.remove(name)


@pytest.fixture
def daemon(tmp_path: Path) -> Callable[..., ServiceSpec]:
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)

    def make(name: str = "demo", out: Path | None = None, **kwargs: Any) -> ServiceSpec:
        out = out or tmp_path / f"{name}.out"
        return ServiceSpec(name, [sys.executable, str(script), str(out)], **kwargs)

    return make


def wait_for(predicate: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    return process_start_time(pid) is not None


def test_process_manager_lifecycle(
    tmp_path: Path, processes: ProcessManager, daemon: Callable[..., ServiceSpec]
) -> None:
    conf = tmp_path / "demo.conf"
    conf.write_text("v1")
    out = tmp_path / "demo.out"
    spec = daemon(out=out, environment={"GREETING": "hello"}, watched_files=[conf])

    assert processes.ensure(spec) is ServiceChange.STARTED
    pid = processes.pid("demo")
    assert pid is not None
    assert processes.is_running("demo")
    assert processes.pid_path("demo").read_text() == f"{pid}\n"
    wait_for(lambda: out.exists() and f"start {pid} hello" in out.read_text())
    assert os.getpgid(pid) == pid, "the service leads its own process group"

    assert processes.ensure(spec) is ServiceChange.UNCHANGED
    assert processes.pid("demo") == pid

    # A new manager object on the same state directory finds the running process.
    again = ProcessManager(tmp_path / "services")
    assert again.is_running("demo")
    assert again.pid("demo") == pid
    assert again.ensure(spec) is ServiceChange.UNCHANGED
    assert again.list() == ["demo"]

    conf.write_text("v2")
    assert processes.ensure(spec) is ServiceChange.RESTARTED
    pid2 = processes.pid("demo")
    assert pid2 is not None
    assert pid2 != pid
    assert not alive(pid)

    changed = daemon(out=out, environment={"GREETING": "bonjour"}, watched_files=[conf])
    assert processes.ensure(changed) is ServiceChange.RESTARTED
    pid3 = processes.pid("demo")
    assert pid3 is not None
    assert pid3 not in (pid, pid2)
    assert not alive(pid2)
    wait_for(lambda: f"start {pid3} bonjour" in out.read_text())
    assert processes.get("demo") == changed

    assert processes.stop("demo") is True
    assert not alive(pid3)
    assert not processes.is_running("demo")
    assert not processes.pid_path("demo").exists()
    assert processes.stop("demo") is False
    assert processes.ensure(changed) is ServiceChange.STARTED


def test_reload_sends_the_reload_signal(
    tmp_path: Path, processes: ProcessManager, daemon: Callable[..., ServiceSpec]
) -> None:
    out = tmp_path / "demo.out"
    processes.ensure(daemon(out=out, reload_signal="HUP"))
    pid = processes.pid("demo")
    wait_for(lambda: out.exists() and "start" in out.read_text())
    processes.reload("demo")
    wait_for(lambda: f"hup {pid}" in out.read_text())
    assert processes.pid("demo") == pid


def test_stop_kills_the_whole_group_and_escalates_to_sigkill(
    tmp_path: Path, processes: ProcessManager, daemon: Callable[..., ServiceSpec]
) -> None:
    child_pid_file = tmp_path / "child.pid"
    spec = ServiceSpec(
        "group",
        ["/bin/sh", "-c", f"sleep 300 & echo $! > {child_pid_file}; wait"],
    )
    processes.ensure(spec)
    wait_for(lambda: child_pid_file.exists() and child_pid_file.read_text().strip())
    child = int(child_pid_file.read_text())
    assert alive(child)
    processes.stop("group")
    wait_for(lambda: not alive(child), timeout=5)

    stubborn = ProcessManager(tmp_path / "services", stop_timeout=0.3)
    stubborn.ensure(daemon(name="stubborn", environment={"IGNORE_TERM": "1"}))
    pid = stubborn.pid("stubborn")
    assert pid is not None
    wait_for(lambda: (tmp_path / "stubborn.out").exists())
    started = time.monotonic()
    assert stubborn.stop("stubborn") is True
    assert not alive(pid)
    assert 0.25 < time.monotonic() - started < 5


def test_a_reused_pid_is_not_mistaken_for_the_service(
    processes: ProcessManager, daemon: Callable[..., ServiceSpec]
) -> None:
    processes.ensure(daemon())
    state_path = processes.state_dir / "demo.json"
    state = json.loads(state_path.read_text())
    real_pid = state["pid"]
    # Point the state at a live process that is not ours (this test process).
    state_path.write_text(json.dumps({**state, "pid": os.getpid()}))
    assert not processes.is_running("demo")
    assert processes.stop("demo") is False  # and the test process is still alive to say so
    state_path.write_text(json.dumps(state))
    assert processes.stop("demo") is True
    assert not alive(real_pid)


def test_a_process_that_exits_at_once_is_an_error(processes: ProcessManager) -> None:
    spec = ServiceSpec("broken", ["/bin/sh", "-c", "echo 'bad flag --x' >&2; exit 3"])
    with pytest.raises(ServiceError, match=r"status 3.*bad flag --x"):
        processes.ensure(spec)
    assert not processes.is_running("broken")
    with pytest.raises(ServiceError, match="cannot start"):
        processes.ensure(ServiceSpec("missing", ["/nonexistent/kaji-daemon"]))


def test_a_real_server_is_reachable_and_logs(tmp_path: Path, processes: ProcessManager) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hi from kaji")
    spec = ServiceSpec(
        "web",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        working_directory=tmp_path / "www",
    )
    assert processes.ensure(spec) is ServiceChange.STARTED

    def fetch() -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=2) as r:
                return r.read()
        except OSError:
            return None

    wait_for(fetch)
    assert fetch() == b"hi from kaji"
    assert "GET /hello.txt" in processes.log_path("web").read_text()
    assert processes.remove("web") is True
    assert fetch() is None
    assert processes.list() == []


# -- SystemdManager against a recording systemctl ------------------------------------------------

FAKE_SYSTEMCTL = """#!{python}
import json, sys
from pathlib import Path
from typing import Any
here = Path(__file__).parent
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
active_file = here / "active.json"
active = set(json.loads(active_file.read_text())) if active_file.exists() else set()
fail = (here / "fail").read_text().split() if (here / "fail").exists() else []
if args and args[0] in fail:
    print(f"Failed to {{args[0]}} unit: access denied", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["is-active", "--quiet"]:
    sys.exit(0 if args[2] in active else 3)
if args[:2] == ["enable", "--now"]:
    active.add(args[2])
if args[:2] == ["disable", "--now"]:
    active.discard(args[2])
active_file.write_text(json.dumps(sorted(active)))
"""


class FakeSystemctl:
    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.dir = directory
        self.path = directory / "systemctl"
        self.path.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
        self.path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        log = self.dir / "calls.jsonl"
        if not log.exists():
            return []
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        log.unlink()
        return calls

    def set_active(self, *units: str) -> None:
        (self.dir / "active.json").write_text(json.dumps(sorted(units)))

    def fail(self, *verbs: str) -> None:
        (self.dir / "fail").write_text(" ".join(verbs))


@pytest.fixture
def systemctl(tmp_path: Path) -> FakeSystemctl:
    return FakeSystemctl(tmp_path / "bin")


def test_systemd_manager_calls(tmp_path: Path, systemctl: FakeSystemctl) -> None:
    host = Host(tmp_path / "root")
    host.services = SystemdManager(host, systemctl=str(systemctl.path))
    conf = host.path("/etc/demo/demo.conf")
    host.write_file("/etc/demo/demo.conf", "v1")
    spec = ServiceSpec("demo", ["/usr/bin/demo", "--config", str(conf)], watched_files=[conf])
    unit = host.path("/etc/systemd/system/demo.service")

    assert host.services.ensure(spec) is ServiceChange.STARTED
    assert systemctl.calls() == [
        ["daemon-reload"],
        ["is-active", "--quiet", "demo.service"],
        ["enable", "--now", "demo.service"],
    ]
    assert unit.read_text() == render_systemd_unit(spec)
    assert unit.stat().st_mode & 0o777 == 0o644

    written = host.stats.files_written
    mtime = unit.stat().st_mtime_ns
    assert host.services.ensure(spec) is ServiceChange.UNCHANGED
    assert systemctl.calls() == [["is-active", "--quiet", "demo.service"]]
    assert unit.stat().st_mtime_ns == mtime
    assert host.stats.files_written == written

    host.write_file("/etc/demo/demo.conf", "v2")  # watched file: restart, no daemon-reload
    assert host.services.ensure(spec) is ServiceChange.RESTARTED
    assert systemctl.calls() == [
        ["is-active", "--quiet", "demo.service"],
        ["restart", "demo.service"],
    ]

    changed = ServiceSpec(
        "demo", ["/usr/bin/demo", "--config", str(conf), "-v"], watched_files=[conf]
    )
    assert host.services.ensure(changed) is ServiceChange.RESTARTED
    assert systemctl.calls() == [
        ["daemon-reload"],
        ["is-active", "--quiet", "demo.service"],
        ["restart", "demo.service"],
    ]
    assert "-v" in unit.read_text()

    systemctl.set_active()  # it died: ensure starts it again
    assert host.services.ensure(changed) is ServiceChange.STARTED
    assert systemctl.calls() == [
        ["is-active", "--quiet", "demo.service"],
        ["enable", "--now", "demo.service"],
    ]

    host.services.reload("demo")
    assert systemctl.calls() == [["reload", "demo.service"]]

    assert host.services.stop("demo") is True
    assert systemctl.calls() == [
        ["is-active", "--quiet", "demo.service"],
        ["disable", "--now", "demo.service"],
    ]
    assert host.services.remove("demo") is True
    assert systemctl.calls() == [["disable", "--now", "demo.service"], ["daemon-reload"]]
    assert not unit.exists()
    assert host.services.list() == []
    assert host.stats.services_started == 2
    assert host.stats.services_restarted == 2
    assert host.stats.services_stopped == 1
    assert host.stats.services_reloaded == 1


def test_systemd_manager_restarts_a_running_service_it_has_no_record_of(
    tmp_path: Path, systemctl: FakeSystemctl
) -> None:
    host = Host(tmp_path / "root")
    manager = SystemdManager(host, systemctl=str(systemctl.path))
    systemctl.set_active("demo.service")  # started by something before kaji managed it
    assert manager.ensure(ServiceSpec("demo", ["/usr/bin/demo"])) is ServiceChange.RESTARTED


def test_systemd_manager_reports_systemctl_failures(
    tmp_path: Path, systemctl: FakeSystemctl
) -> None:
    host = Host(tmp_path / "root")
    manager = SystemdManager(host, systemctl=str(systemctl.path))
    systemctl.fail("enable")
    with pytest.raises(ServiceError, match=r"enable --now demo\.service failed.*access denied"):
        manager.ensure(ServiceSpec("demo", ["/usr/bin/demo"]))
    assert manager.get("demo") is None, "a failed start must not record a fingerprint"
    assert manager.stop("never-seen") is False

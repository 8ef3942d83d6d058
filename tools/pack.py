#!/usr/bin/env python3
"""Pack every charm under charms/ into build/<charm-name>.charm with charmcraft.

charmcraft only packs on Ubuntu. This script runs it in destructive mode (on this machine,
no LXD) inside a private mount namespace in which an Ubuntu 24.04 os-release file is
bind-mounted over /etc/os-release and /usr/lib/os-release; the host's own files are never
touched and the bind mounts vanish with the namespace.

Each charm packs with a plain `charmcraft pack` in its own directory: nothing is copied into
it first. The shared library comes in through the charm's `kaji` part (a dump part whose source
is ../../lib, the repository's one copy), as it does for anyone running `charmcraft pack` there.
Per charm:

1. charmcraft's work dirs (parts/, stage/, prime/, overlay/) kept from the last pack are moved
   back into the charm directory when nothing they depend on changed (charmcraft, the charm
   Python, the file lists of the charm and lib/kaji), so the charm plugin reuses its venv.
2. `charmcraft pack --destructive-mode --platform <arch>` runs in the charm directory.
3. The charm goes to build/<charm-name>.charm (stable name, one per charm, for the machine's
   architecture); the work dirs go to build/.work/<charm>/, out of the source tree.

--plain instead runs only step 2 (without --platform), from a clean state, then moves the charm
to the build dir and removes the work dirs: the pack every charm author and pytest-operator's
`ops_test.build_charm` does.

charmcraft itself runs from a venv made by the system's /usr/bin/python3 with
--system-site-packages (for python3-apt), created once and then reused. The charm's own
dependencies are installed by charmcraft's `charm` plugin with the interpreter of the charm's
base (Python 3.12 on Ubuntu 24.04), so binary wheels in the charm match the machine it runs on.

Usage: tools/pack.py [CHARM ...] [--charm DIR ...] [--plain] [--build-dir DIR] [--venv DIR]
                     [--python PATH] [--jobs N] [--clean]
       CHARM is a name under charms/ or a directory; default: every charm under charms/.
       --clean drops the kept work dirs first (a cold pack, charmcraft venv kept).
Needs: root (or unprivileged user namespaces), util-linux's unshare, python3-venv, python3-apt.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import glob
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
CHARMCRAFT_SPEC = ("charmcraft>=4,<5", "pyopenssl>=24")
"""What the charmcraft venv holds: Debian's python3-openssl is too old for charmcraft's deps."""
TARGET_PYTHON = (3, 12)
"""Python of the charms' base, ubuntu@24.04: the charm's venv is built with this version."""
UBUNTU_OS_RELEASE = """\
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=noble
"""
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x"}

# Runs inside the private mount namespace: $1 is the os-release file, the rest the command.
NAMESPACE_SCRIPT = """\
set -e
mount --make-rprivate /
mount --bind "$1" /etc/os-release
if [ -e /usr/lib/os-release ]; then mount --bind "$1" /usr/lib/os-release; fi
grep -qx 'ID=ubuntu' /etc/os-release
shift
exec "$@"
"""


def log(message: str) -> None:
    """Print a progress line."""
    print(f"pack: {message}", flush=True)


def charm_name(charm_dir: Path) -> str:
    """Return the `name:` declared in the charm's charmcraft.yaml."""
    text = (charm_dir / "charmcraft.yaml").read_text(encoding="utf-8")
    match = re.search(r"^name:\s*['\"]?([A-Za-z0-9-]+)['\"]?\s*$", text, re.MULTILINE)
    if not match:
        raise SystemExit(f"pack: no top-level name: in {charm_dir / 'charmcraft.yaml'}")
    return match.group(1)


def find_charms(selected: list[str]) -> list[Path]:
    """Return the charm directories to pack (all of charms/* by default)."""
    if selected:
        dirs = [Path(s).resolve() if os.sep in s else ROOT / "charms" / s for s in selected]
    else:
        dirs = sorted(p.parent for p in (ROOT / "charms").glob("*/charmcraft.yaml"))
    for d in dirs:
        if not (d / "charmcraft.yaml").is_file():
            raise SystemExit(f"pack: {d} has no charmcraft.yaml")
    if not dirs:
        raise SystemExit("pack: no charms found under charms/")
    return dirs


def ensure_charmcraft(venv: Path) -> Path:
    """Create the charmcraft venv when it is missing or broken; return the charmcraft path."""
    charmcraft = venv / "bin" / "charmcraft"
    marker = venv / ".kaji-charmcraft-ready"
    wanted = " ".join(CHARMCRAFT_SPEC) + "\n"
    if marker.is_file() and marker.read_text(encoding="utf-8") == wanted and charmcraft.is_file():
        return charmcraft
    system_python = Path("/usr/bin/python3")
    if not system_python.is_file():
        raise SystemExit("pack: /usr/bin/python3 is missing (install python3 and python3-venv)")
    check = subprocess.run(
        [str(system_python), "-c", "import apt, apt_pkg"], capture_output=True, check=False
    )
    if check.returncode != 0:
        raise SystemExit("pack: the system python lacks python3-apt: apt-get install python3-apt")
    log(f"creating the charmcraft venv in {venv}")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(system_python), "-m", "venv", "--system-site-packages", str(venv)], check=True
    )
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade"]
    subprocess.run([*pip, *CHARMCRAFT_SPEC], check=True, stdin=subprocess.DEVNULL)
    subprocess.run([str(charmcraft), "version"], check=True, stdin=subprocess.DEVNULL)
    marker.write_text(wanted, encoding="utf-8")
    return charmcraft


def python_version(python: str) -> tuple[int, int] | None:
    """Return (major, minor) of an interpreter, or None if it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0]), int(out[1])


def find_target_python(explicit: str | None) -> Path:
    """Find a real (non-shim) Python of the charms' base version to build the charm venv."""
    want = "{}.{}".format(*TARGET_PYTHON)
    if explicit:
        candidates = [explicit]
    else:
        pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
        candidates = [
            p
            for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and "shims" not in Path(d).parts
            for p in [os.path.join(d, f"python{want}")]
            if os.path.isfile(p)
        ]
        candidates += sorted(
            glob.glob(os.path.join(pyenv_root, "versions", f"{want}*", "bin", f"python{want}")),
            reverse=True,
        )
        candidates += [f"/usr/bin/python{want}", f"/usr/local/bin/python{want}"]
    for candidate in candidates:
        if os.path.isfile(candidate) and python_version(candidate) == TARGET_PYTHON:
            return Path(candidate)
    raise SystemExit(
        f"pack: no Python {want} found (the charms' base ubuntu@24.04 runs Python {want}, and "
        "binary wheels in the charm must match it); pass --python /path/to/python" + want
    )


def pack_env(target_python: Path, bin_dir: Path) -> dict[str, str]:
    """Environment for charmcraft: non-interactive, target python first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "python3"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target_python)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["CI"] = "true"
    env["DEBIAN_FRONTEND"] = "noninteractive"
    env.setdefault("XDG_RUNTIME_DIR", str(bin_dir.parent / "run"))
    Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    for var in ("CHARMCRAFT_MANAGED_MODE", "CRAFT_MANAGED_MODE", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(var, None)
    return env


LEGACY_METADATA = ("metadata.yaml", "config.yaml", "actions.yaml")
"""Files charmcraft reads beside charmcraft.yaml; kaji's charms keep everything in the latter."""
WORK_DIRS = ("parts", "stage", "prime", "overlay")
"""charmcraft's work directories: in destructive mode they are made in the charm directory."""
CACHES = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
"""Test and tool caches: never packed (each charm's .jujuignore), not part of the sources."""
LISTING_SKIP = {*WORK_DIRS, *CACHES}


class Charmcraft(NamedTuple):
    """How to run charmcraft here: its path, its environment, the platform, the charm Python."""

    path: Path
    env: dict[str, str]
    arch: str
    python: Path

    def version(self) -> str:
        """The installed charmcraft version, from its venv's dist-info."""
        found = sorted(self.path.parent.parent.glob("lib/python*/site-packages/charmcraft-*"))
        return (
            found[0].name.removeprefix("charmcraft-").removesuffix(".dist-info") if found else "?"
        )


def run_charmcraft(tool: Charmcraft, project: Path, log_path: Path, extra: list[str]) -> None:
    """Run `charmcraft pack --destructive-mode` in project inside the os-release namespace."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    strays = [n for n in LEGACY_METADATA if (project / n).exists()]
    if strays:
        log(
            f"{project} holds {', '.join(strays)} beside charmcraft.yaml (ops.testing writes them "
            "into a Context's charm_root): charmcraft refuses a config or actions section when "
            "they exist"
        )
    with tempfile.NamedTemporaryFile("w", prefix="kaji-os-release-", delete=False) as handle:
        handle.write(UBUNTU_OS_RELEASE)
        os_release = handle.name
    os.chmod(os_release, 0o644)
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    cmd = [
        *unshare,
        "/bin/sh",
        "-c",
        NAMESPACE_SCRIPT,
        "kaji-pack",
        os_release,
        str(tool.path),
        "pack",
        "--destructive-mode",
        "--verbose",
        *extra,
    ]
    try:
        with log_path.open("w", encoding="utf-8") as out:
            result = subprocess.run(
                cmd,
                cwd=project,
                env=tool.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
    finally:
        os.unlink(os_release)
    if result.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(
            f"pack: charmcraft failed in {project} (exit {result.returncode}); log: {log_path}"
        )


@contextlib.contextmanager
def charm_lock(charm_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on one charm directory: one pack at a time works in it."""
    digest = hashlib.sha256(str(charm_dir).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"kaji-pack-{digest}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_work_dirs(charm_dir: Path) -> list[str]:
    """Remove charmcraft's work directories from the charm directory; return which there were."""
    found = [name for name in WORK_DIRS if (charm_dir / name).exists()]
    for name in found:
        shutil.rmtree(charm_dir / name)
    return found


def remove_stale_shared_copy(charm_dir: Path) -> None:
    """Drop charms/<charm>/lib/kaji, the copy older versions of this script made."""
    stale = charm_dir / "lib" / "kaji"
    if stale.is_symlink() or stale.is_file():
        stale.unlink()
    elif stale.is_dir():
        shutil.rmtree(stale)
    else:
        return
    log(f"removed {stale}, a copy of lib/kaji left by an older tools/pack.py")
    with contextlib.suppress(OSError):
        stale.parent.rmdir()


def listing(root: Path) -> list[str]:
    """Relative paths of every file under root (charmcraft's work dirs and caches left out)."""
    found = []
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in LISTING_SKIP and not (here == root and d.endswith(".charm"))
        )
        found += [(here / f).relative_to(root).as_posix() for f in filenames]
    return sorted(f for f in found if not f.endswith((".pyc", ".charm")))


def cache_key(charm_dir: Path, tool: Charmcraft) -> str:
    """What must not change for charmcraft's work dirs to be reused.

    charmcraft itself notices changed files, a changed parts: section and changed requirements
    (the charm plugin hashes them), but not a file that was deleted or renamed: the file lists
    of the charm and of lib/kaji are part of the key, with charmcraft and the charm Python.
    """
    digest = hashlib.sha256()
    parts = (CHARMCRAFT_SPEC, tool.version(), str(tool.python), tool.arch)
    digest.update(repr(parts).encode())
    for root in (charm_dir, ROOT / "lib" / "kaji"):
        digest.update(repr((str(root), listing(root) if root.is_dir() else [])).encode())
    return digest.hexdigest()


def sources_digest(charm_dir: Path) -> str:
    """A digest of every source file's path and content (the charm and lib/kaji)."""
    digest = hashlib.sha256()
    for root in (charm_dir, ROOT / "lib" / "kaji"):
        for name in listing(root) if root.is_dir() else []:
            digest.update(f"{root}/{name}".encode())
            with contextlib.suppress(OSError):
                digest.update(hashlib.sha256((root / name).read_bytes()).digest())
    return digest.hexdigest()


def restore_work_dirs(cache: Path, key: str, charm_dir: Path) -> bool:
    """Move the work dirs parked after the last pack back into the charm; return if it did."""
    stamp = cache / "key"
    if not stamp.is_file() or stamp.read_text(encoding="utf-8") != key:
        shutil.rmtree(cache, ignore_errors=True)
        return False
    for name in WORK_DIRS:
        if (cache / name).exists():
            (cache / name).rename(charm_dir / name)
    return True


def park_work_dirs(charm_dir: Path, cache: Path, key: str) -> None:
    """Move charmcraft's work dirs out of the source tree, to be reused by the next pack."""
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    for name in WORK_DIRS:
        if (charm_dir / name).exists():
            shutil.move(str(charm_dir / name), cache / name)
    (cache / "key").write_text(key, encoding="utf-8")


def collect(charm_dir: Path, name: str, tool: Charmcraft, dest: Path) -> Path:
    """Move the charm charmcraft just packed in charm_dir to dest."""
    produced = charm_dir / f"{name}_{tool.arch}.charm"
    if not produced.is_file():
        found = sorted(p.name for p in charm_dir.glob("*.charm"))
        raise SystemExit(f"pack: charmcraft left no {produced.name} in {charm_dir} ({found})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    shutil.move(str(produced), dest)
    return dest


def pack_one(charm_dir: Path, build_dir: Path, tool: Charmcraft) -> Path:
    """Pack one charm in its directory, warm when possible; return build/<name>.charm."""
    started = time.monotonic()
    name = charm_name(charm_dir)
    cache = build_dir / ".work" / charm_dir.name
    log_path = build_dir / "logs" / f"{name}.log"
    with charm_lock(charm_dir):
        remove_stale_shared_copy(charm_dir)
        if left := remove_work_dirs(charm_dir):
            log(f"removed charmcraft's {', '.join(left)} left in {charm_dir} by another pack")
        key = cache_key(charm_dir, tool)
        reused = restore_work_dirs(cache, key, charm_dir)
        before = sources_digest(charm_dir)
        try:
            run_charmcraft(tool, charm_dir, log_path, ["--platform", tool.arch])
            dest = collect(charm_dir, name, tool, build_dir / f"{name}.charm")
        except BaseException:
            remove_work_dirs(charm_dir)
            shutil.rmtree(cache, ignore_errors=True)
            raise
        if sources_digest(charm_dir) == before:
            park_work_dirs(charm_dir, cache, key)
        else:
            # charmcraft notices changes by modification time: a file changed while it ran
            # could look older than its record and never be packed. The next pack is cold.
            remove_work_dirs(charm_dir)
            shutil.rmtree(cache, ignore_errors=True)
            log(f"{charm_dir} or lib/kaji changed during the pack: its work dirs are dropped")
    state = "warm: charmcraft's work dirs reused" if reused else "cold"
    log(f"{dest} ({time.monotonic() - started:.1f}s, {state})")
    return dest


def pack_plain(charm_dir: Path, build_dir: Path, tool: Charmcraft) -> Path:
    """`charmcraft pack` in the charm directory as a charm author runs it, from a clean state.

    Nothing is copied or prepared: the namespace wrapper and the Python on PATH stand in for an
    Ubuntu 24.04 host. The charm is then moved to build_dir and charmcraft's work dirs removed.
    """
    started = time.monotonic()
    name = charm_name(charm_dir)
    log_path = build_dir / "logs" / f"{name}.plain.log"
    with charm_lock(charm_dir):
        if left := remove_work_dirs(charm_dir):
            log(f"removed charmcraft's {', '.join(left)} in {charm_dir}: plain packs start clean")
        try:
            run_charmcraft(tool, charm_dir, log_path, [])
            dest = collect(charm_dir, name, tool, build_dir / f"{name}.charm")
        finally:
            remove_work_dirs(charm_dir)
    log(f"{dest} (plain `charmcraft pack` in {charm_dir}, {time.monotonic() - started:.1f}s)")
    return dest


def main(argv: list[str] | None = None) -> int:
    """Entry point: pack the charms and report where they are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("charms", nargs="*", metavar="CHARM", help="charm dir or name")
    parser.add_argument("--charm", action="append", default=[], help="charm dir (repeatable)")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain `charmcraft pack` in each charm directory from a clean state, no cache",
    )
    parser.add_argument("--build-dir", default=str(ROOT / "build"))
    parser.add_argument(
        "--venv",
        default=os.environ.get("KAJI_CHARMCRAFT_VENV", str(ROOT / ".tox" / "charmcraft-venv")),
        help="where charmcraft's venv lives (created only if missing)",
    )
    parser.add_argument("--python", default=os.environ.get("KAJI_CHARM_PYTHON"))
    parser.add_argument(
        "--clean", action="store_true", help="drop charmcraft's kept work dirs first (cold pack)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("KAJI_PACK_JOBS", min(2, os.cpu_count() or 1))),
        help="charms packed at once (default: 2, or 1 on one core)",
    )
    args = parser.parse_args(argv)

    build_dir = Path(args.build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    charms = find_charms([*args.charms, *args.charm])
    python = find_target_python(args.python)
    tool = Charmcraft(
        path=ensure_charmcraft(Path(args.venv).resolve()),
        env=pack_env(python, build_dir / ".work" / "_bin"),
        arch=DEB_ARCH.get(platform.machine(), platform.machine()),
        python=python,
    )
    log(f"charmcraft {tool.path} ({tool.version()}), charm python {python}, platform {tool.arch}")
    if args.clean:
        for charm_dir in charms:
            shutil.rmtree(build_dir / ".work" / charm_dir.name, ignore_errors=True)
    pack = pack_plain if args.plain else pack_one
    # The first charm packs alone: if the charm plugin's build packages are missing,
    # charmcraft apt-installs them then, and two apt-gets must not race for the dpkg lock.
    pack(charms[0], build_dir, tool)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(pack, charm_dir, build_dir, tool) for charm_dir in charms[1:]]
        for future in futures:
            future.result()
    log(f"packed {len(charms)} charm(s) in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

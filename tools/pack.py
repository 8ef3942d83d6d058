#!/usr/bin/env python3
"""Pack every charm under charms/ into build/<charm-name>.charm with charmcraft.

charmcraft only packs on Ubuntu. This script runs it in destructive mode (on this machine,
no LXD) inside a private mount namespace in which an Ubuntu 24.04 os-release file is
bind-mounted over /etc/os-release and /usr/lib/os-release; the host's own files are never
touched and the bind mounts vanish with the namespace.

Per charm:

1. lib/kaji is copied afresh into charms/<charm>/lib/kaji (git-ignored), without caches.
2. The charm directory is copied afresh into build/.work/<charm>/ (tests and caches left out)
   and charmcraft packs there, so its parts/, stage/ and prime/ never enter the source tree;
   the pack directory is removed afterwards. The charm plugin's dependency venv is kept in
   build/.work/deps/<charm>/ and handed back to charmcraft while requirements.txt, the parts:
   section, the charm's Python and charmcraft's version are unchanged (a warm pack).
3. The packed charm is moved to build/<charm-name>.charm (stable name, one per charm, for the
   machine's architecture).

charmcraft itself runs from a venv made by the system's /usr/bin/python3 with
--system-site-packages (for python3-apt), created once and then reused. The charm's own
dependencies are installed by charmcraft's `charm` plugin with the interpreter of the charm's
base (Python 3.12 on Ubuntu 24.04), so binary wheels in the charm match the machine it runs on.

Usage: tools/pack.py [--charm DIR ...] [--build-dir DIR] [--venv DIR] [--python PATH]
                     [--jobs N] [--clean]
       --clean drops the dependency caches first (a cold pack, charmcraft venv kept).
Needs: root (or unprivileged user namespaces), util-linux's unshare, python3-venv, python3-apt.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
from pathlib import Path

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


def copy_shared_lib(charm_dir: Path) -> None:
    """Replace charms/<charm>/lib/kaji with a fresh copy of lib/kaji (no caches)."""
    dest = charm_dir / "lib" / "kaji"
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        ROOT / "lib" / "kaji", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
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


def run_charmcraft(
    charmcraft: Path, project: Path, env: dict[str, str], log_path: Path, arch: str
) -> None:
    """Run `charmcraft pack --destructive-mode` in project inside the os-release namespace."""
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
        str(charmcraft),
        "pack",
        "--destructive-mode",
        "--platform",
        arch,
        "--verbose",
    ]
    try:
        with log_path.open("w", encoding="utf-8") as out:
            result = subprocess.run(
                cmd,
                cwd=project,
                env=env,
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


COPY_IGNORE_ANYWHERE = ("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache")
COPY_IGNORE_TOP = {"tests", "venv", ".venv", ".tox", "build", "parts", "stage", "prime", "overlay"}
"""Left out of the pack: tests and caches, charmcraft outputs of a stray in-tree pack."""
DEPS_CACHE_ITEMS = ("staging-venv", "charmcraft-dependencies-hash.txt")
"""What the charm plugin leaves in its build dir and reuses when the dependencies are unchanged."""


def stage_project(charm_dir: Path, project: Path) -> None:
    """Copy the charm's sources into an empty pack directory."""
    anywhere = shutil.ignore_patterns(*COPY_IGNORE_ANYWHERE)

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(anywhere(directory, names))
        if Path(directory) == charm_dir:
            ignored |= {n for n in names if n in COPY_IGNORE_TOP or n.endswith(".charm")}
        return ignored

    if project.exists():
        shutil.rmtree(project)
    shutil.copytree(charm_dir, project, symlinks=True, ignore=ignore)


def dependency_key(charm_dir: Path, target_python: tuple[int, int]) -> str:
    """Hash everything that decides the charm's venv: requirements, parts, python, charmcraft."""
    digest = hashlib.sha256()
    requirements = charm_dir / "requirements.txt"
    if requirements.is_file():
        digest.update(requirements.read_bytes())
    text = (charm_dir / "charmcraft.yaml").read_text(encoding="utf-8")
    parts = re.search(r"^parts:\n(?:[ \t#].*\n|\n)*", text + "\n", re.MULTILINE)
    digest.update((parts.group(0) if parts else "").encode())
    digest.update(repr((target_python, CHARMCRAFT_SPEC)).encode())
    return digest.hexdigest()


def restore_dependencies(cache: Path, key: str, project: Path) -> bool:
    """Put a cached staging venv into the project so charmcraft reuses it; return if it did."""
    stamp = cache / "key"
    if not stamp.is_file() or stamp.read_text(encoding="utf-8") != key:
        return False
    if not all((cache / item).exists() for item in DEPS_CACHE_ITEMS):
        return False
    # Hard links: charmcraft only reads these (its build step copies them).
    shutil.copytree(
        cache / "staging-venv", project / "staging-venv", symlinks=True, copy_function=os.link
    )
    shutil.copy2(cache / DEPS_CACHE_ITEMS[1], project / DEPS_CACHE_ITEMS[1])
    # The charm builder packs every file of its build dir except /staging-venv: keep the hash
    # file out of the charm (in the pack copy only; .jujuignore itself is never packed).
    with (project / ".jujuignore").open("a", encoding="utf-8") as ignore:
        ignore.write(f"\n/{DEPS_CACHE_ITEMS[1]}\n")
    return True


def save_dependencies(project: Path, cache: Path, key: str) -> None:
    """Keep the charm part's staging venv for the next pack of the same dependencies."""
    built = project / "parts" / "charm" / "build"
    if not all((built / item).exists() for item in DEPS_CACHE_ITEMS):
        return
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    for item in DEPS_CACHE_ITEMS:
        shutil.move(str(built / item), cache / item)
    (cache / "key").write_text(key, encoding="utf-8")


def pack_one(
    charm_dir: Path,
    build_dir: Path,
    charmcraft: Path,
    env: dict[str, str],
    arch: str,
    target_python: tuple[int, int],
) -> Path:
    """Pack one charm from a fresh copy of its sources; return build/<name>.charm."""
    started = time.monotonic()
    name = charm_name(charm_dir)
    copy_shared_lib(charm_dir)
    work = build_dir / ".work"
    project = work / charm_dir.name
    cache = work / "deps" / charm_dir.name
    stage_project(charm_dir, project)
    key = dependency_key(charm_dir, target_python)
    reused = restore_dependencies(cache, key, project)
    log_path = build_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run_charmcraft(charmcraft, project, env, log_path, arch)
    produced = sorted(project.glob("*.charm"))
    if len(produced) != 1:
        raise SystemExit(f"pack: expected one .charm in {project}, found {produced}")
    dest = build_dir / f"{name}.charm"
    if dest.exists():
        dest.unlink()
    shutil.move(str(produced[0]), dest)
    save_dependencies(project, cache, key)
    shutil.rmtree(project)
    deps = "reused" if reused else "installed"
    log(f"{dest} ({time.monotonic() - started:.1f}s, dependencies {deps})")
    return dest


def main(argv: list[str] | None = None) -> int:
    """Entry point: pack the charms and report where they are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charm", action="append", default=[], help="charm dir (repeatable)")
    parser.add_argument("--build-dir", default=str(ROOT / "build"))
    parser.add_argument(
        "--venv",
        default=os.environ.get("KAJI_CHARMCRAFT_VENV", str(ROOT / ".tox" / "charmcraft-venv")),
        help="where charmcraft's venv lives (created only if missing)",
    )
    parser.add_argument("--python", default=os.environ.get("KAJI_CHARM_PYTHON"))
    parser.add_argument(
        "--clean", action="store_true", help="drop cached charm dependencies first"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("KAJI_PACK_JOBS", min(2, os.cpu_count() or 1))),
        help="charms packed at once (default: 2, or 1 on one core)",
    )
    args = parser.parse_args(argv)

    arch = DEB_ARCH.get(platform.machine(), platform.machine())
    build_dir = Path(args.build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    charms = find_charms(args.charm)
    charmcraft = ensure_charmcraft(Path(args.venv).resolve())
    target_python = find_target_python(args.python)
    env = pack_env(target_python, build_dir / ".work" / "_bin")
    version = python_version(str(target_python)) or TARGET_PYTHON
    log(f"charmcraft {charmcraft}, charm python {target_python}, platform {arch}")
    if args.clean:
        shutil.rmtree(build_dir / ".work" / "deps", ignore_errors=True)
    # The first charm packs alone: if the charm plugin's build packages are missing,
    # charmcraft apt-installs them then, and two apt-gets must not race for the dpkg lock.
    pack_one(charms[0], build_dir, charmcraft, env, arch, version)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(pack_one, charm_dir, build_dir, charmcraft, env, arch, version)
            for charm_dir in charms[1:]
        ]
        for future in futures:
            future.result()
    log(f"packed {len(charms)} charm(s) in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

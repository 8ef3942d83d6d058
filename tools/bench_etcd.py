#!/usr/bin/env python3
"""Benchmark the etcd charm's workload: time to a healthy 3-member TLS cluster, and to add one.

Runs Debian's real etcd through ``charms/etcd/src/kaji_etcd`` on sandboxed machines
(127.0.1.N, one Host root each), the way the charm builds a cluster: bootstrap one member,
then add each further member as a learner, start it, let it catch up and promote it. Needs
root (addresses 127.0.1.N) and etcd/etcdctl on PATH. Writes the results into the ``## etcd``
section of docs/performance.md (creating the file or the section as needed).

    python tools/bench_etcd.py [--runs 3] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from kaji import certs, pki  # noqa: E402
from kaji.host import Host, ProcessManager  # noqa: E402
from kaji.interfaces.etcd_peers import expected_member_identity  # noqa: E402

PERFORMANCE_MD = REPO / "docs" / "performance.md"
TOKEN = "kaji-etcd-bench"  # noqa: S105 - an etcd cluster token, not a secret


def load_charm_package() -> ModuleType:
    """The charm's ``kaji_etcd`` package (its name clashes with no other charm's modules)."""
    package = REPO / "charms" / "etcd" / "src" / "kaji_etcd"
    spec = importlib.util.spec_from_file_location(
        "kaji_etcd", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


EtcdError = load_charm_package().EtcdError
binaries = importlib.import_module("kaji_etcd.binaries")
literals = importlib.import_module("kaji_etcd.literals")
EtcdConfig = importlib.import_module("kaji_etcd.config").EtcdConfig
Member = importlib.import_module("kaji_etcd.member").Member


def grow(existing: Any, new: Any, token: str, wait: float = 60) -> list[Any]:
    """Add ``new`` to ``existing``'s cluster as the charm does across two units.

    The leader's part (``member add --learner``) runs through ``existing``; the new unit's part
    (start with ``initial-cluster-state=existing``, catch up, promote) through ``new``.
    """
    endpoints = [u for m in existing.member_list() for u in m.client_urls]
    listed = existing.add_learner(new.name, new.peer_url, endpoints)
    members = {m.name: m.peer_urls[0] for m in listed if m.name and m.peer_urls}
    new.start_joining(token, members)
    if not new.promote_self(endpoints, wait=wait):
        raise EtcdError(f"{new.name} did not catch up within {wait:g}s")
    record, own = new.join_record(), new.own_id()
    if record is not None and own is not None:
        new.write_join_record(record.with_member_id(f"{own:x}"))
    return existing.member_list([*endpoints, new.client_url])


def free_port(addresses: list[str]) -> int:
    """A port free on every address."""
    while True:
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port


def make_member(base: Path, n: int, config: Any, ca: pki.CertificateAuthority) -> Any:
    """etcd-N on 127.0.1.N with its own sandbox root and a member certificate."""
    root = base / f"machine-{n}"
    root.mkdir()
    host = Host(root, ProcessManager(root / "var/lib/kaji/processes"))
    found = binaries.ensure_binaries(host, config)
    member = Member(host, config, found, f"etcd-{n}", f"127.0.1.{n}")
    identity = expected_member_identity(f"etcd/{n}", f"machine-{n}", [member.address])
    request = certs.ensure_key_and_csr(host, literals.PKI_DIR, "member", identity)
    member.install_certificates(ca.cert_pem, pki.sign_csr(request.csr_pem, ca, pki.Profile.PEER))
    return member


def one_run(base: Path) -> tuple[float, float]:
    """Seconds to a healthy 3-member cluster, and to add a 4th member (healthy, voting)."""
    addresses = [f"127.0.1.{n}" for n in range(1, 5)]
    client = free_port(addresses)
    peer = free_port(addresses)
    while peer == client:
        peer = free_port(addresses)
    defaults = {
        "version": "3.5.17",
        "release-mirror": literals.DEFAULT_MIRROR,
        "etcd-sha256": "",
        "client-port": client,
        "peer-port": peer,
        "heartbeat-interval": 100,
        "election-timeout": 1000,
        "snapshot-count": 10000,
        "quota-backend-bytes": "2GiB",
        "auto-compaction-mode": "periodic",
        "auto-compaction-retention": "1h",
    }
    config = EtcdConfig.from_options(defaults)
    ca = pki.create_ca("kaji etcd bench CA")
    members = [make_member(base, n, config, ca) for n in range(1, 5)]
    try:
        start = time.monotonic()
        first = members[0]
        first.bootstrap(TOKEN)
        if not first.wait_healthy(timeout=60):
            raise SystemExit("the first member did not become healthy")
        for member in members[1:3]:
            grow(first, member, TOKEN)
        urls = [m.client_url for m in members[:3]]
        if not first.wait_healthy(urls, timeout=60):
            raise SystemExit("the 3-member cluster did not become healthy")
        three = time.monotonic() - start
        start = time.monotonic()
        grow(first, members[3], TOKEN)
        if not first.wait_healthy([*urls, members[3].client_url], timeout=60):
            raise SystemExit("the 4th member did not become healthy")
        add = time.monotonic() - start
        return three, add
    finally:
        for member in members:
            for name in member.host.services.list():
                member.host.services.remove(name)


def etcd_version() -> str:
    """The etcd version on PATH."""
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"etcd Version: (\S+)", out.stdout)
    return match.group(1) if match else "unknown"


def render(three: list[float], add: list[float]) -> str:
    """The ``## etcd`` section."""

    def row(label: str, values: list[float]) -> str:
        return (
            f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} |"
        )

    return "\n".join(
        [
            "## etcd",
            "",
            "`python tools/bench_etcd.py` (wired into `tox -e bench`): the charm's workload",
            f"module drives real etcd {etcd_version()} on sandboxed machines 127.0.1.N of one "
            "host, TLS with",
            "client certificates on both ports, members added as the charm adds them (learner, "
            "start, catch up,",
            f"promote). {len(three)} runs on {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}.",
            "",
            "| measure | median s | min s | max s |",
            "|---|---|---|---|",
            row("bootstrap to a healthy 3-member cluster", three),
            row("add a 4th member (learner to healthy voter)", add),
            "",
            "Most of this is etcd's own safety: with `strict-reconfig-check` (on) etcd accepts a "
            "membership",
            "change only once every voting member has been connected for 5 seconds, so each "
            "join after a",
            "promotion waits about 5 s; the member's own start and catch-up take well under a "
            "second.",
            "",
        ]
    )


def write_section(section: str, path: Path = PERFORMANCE_MD) -> None:
    """Replace (or add) the ``## etcd`` section of docs/performance.md, leaving the rest."""
    text = path.read_text() if path.exists() else "# Performance\n\n"
    pattern = re.compile(r"^## etcd\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and report it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_etcd: needs root (etcd on 127.0.1.N)", file=sys.stderr)
        return 2
    if not (shutil.which("etcd") and shutil.which("etcdctl")):
        print("bench_etcd: etcd and etcdctl must be on PATH", file=sys.stderr)
        return 2
    three: list[float] = []
    add: list[float] = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="kaji-bench-etcd-") as base:
            t3, t1 = one_run(Path(base))
        three.append(t3)
        add.append(t1)
        print(f"run {run + 1}: 3-member cluster {t3:.2f}s, add a member {t1:.2f}s")
    section = render(three, add)
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"written to {PERFORMANCE_MD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The etcd charm's workload module driving Debian's real etcd: a TLS cluster on 127.0.1.N.

Every member is a sandboxed "machine" (its own Host root, a ProcessManager, its own loopback
address), configured and started by ``charms/etcd/src/kaji_etcd`` (``member``, ``binaries``)
exactly as the charm does; the test plays the leader's and the units' parts in one process
(:func:`grow`).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from charm_source import load_charm_module

from kaji import certs, pki
from kaji.host import CommandError, Host, ProcessManager, ServiceChange
from kaji.interfaces.etcd import expected_client_identity
from kaji.interfaces.etcd_peers import expected_member_identity

EtcdError = load_charm_module("etcd", "kaji_etcd").EtcdError
EtcdConfig = load_charm_module("etcd", "kaji_etcd.config").EtcdConfig
Member = load_charm_module("etcd", "kaji_etcd.member").Member
binaries = load_charm_module("etcd", "kaji_etcd.binaries")
literals = load_charm_module("etcd", "kaji_etcd.literals")
TOKEN = "kaji-etcd-workload-test"


def grow(existing: Any, new: Any, token: str, wait: float = 60) -> list[Any]:
    """Add ``new`` to the cluster ``existing`` belongs to, as the charm does across two units.

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


def _free_ports(addresses: list[str], count: int) -> list[int]:
    """Ports free on every one of ``addresses`` (etcd members share their port numbers)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        if port not in ports:
            ports.append(port)
    return ports


class Lab:
    """Sandboxed etcd machines sharing one CA and one pair of ports."""

    def __init__(self, base: Path, count: int = 6) -> None:
        self.base = base
        self.ca = pki.create_ca("kaji etcd workload-test CA")
        addresses = [f"127.0.1.{n}" for n in range(1, count + 1)]
        client, peer = _free_ports(addresses, 2)
        self.config = EtcdConfig.from_options(
            {
                "version": "3.5.17",
                "release-mirror": literals.DEFAULT_MIRROR,
                "etcd-sha256": "",
                "client-port": client,
                "peer-port": peer,
                "heartbeat-interval": 50,
                "election-timeout": 500,
                "snapshot-count": 10000,
                "quota-backend-bytes": "256MiB",
                "auto-compaction-mode": "periodic",
                "auto-compaction-retention": "1h",
            }
        )
        self.members: list[Any] = []

    def machine(self, n: int, ca: pki.CertificateAuthority | None = None) -> Any:
        """Member etcd-N on 127.0.1.N (N from 1), with a member certificate from ``ca``."""
        ca = ca or self.ca
        root = self.base / f"machine-{n}"
        root.mkdir(exist_ok=True)
        host = Host(root, ProcessManager(root / "var/lib/kaji/processes"))
        found = binaries.ensure_binaries(host, self.config)
        assert found.live
        member = Member(host, self.config, found, f"etcd-{n}", f"127.0.1.{n}")
        identity = expected_member_identity(f"etcd/{n}", f"machine-{n}", [member.address])
        request = certs.ensure_key_and_csr(host, literals.PKI_DIR, "member", identity)
        member.install_certificates(ca.cert_pem, pki.sign_csr(request.csr_pem, ca, "peer"))
        self.members.append(member)
        return member

    def cluster(self, count: int) -> list[Any]:
        """A healthy cluster of ``count`` members, built the way the charm builds it."""
        first = self.machine(1)
        first.bootstrap(TOKEN)
        assert first.wait_healthy(timeout=30)
        members = [first]
        for n in range(2, count + 1):
            member = self.machine(n)
            grow(first, member, TOKEN)
            members.append(member)
        assert first.wait_healthy([m.client_url for m in members], timeout=30)
        return members

    def close(self) -> None:
        for member in self.members:
            for name in member.host.services.list():
                member.host.services.remove(name)


@pytest.fixture
def lab(tmp_path: Path, as_root: None, require_binaries: Callable[..., None]) -> Iterator[Lab]:
    require_binaries("etcd", "etcdctl")
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def _put(member: Any, key: str, value: str, endpoints: list[str] | None = None) -> None:
    member.etcdctl("put", key, value, endpoints=endpoints)


def _get(member: Any, key: str, endpoints: list[str] | None = None) -> str | None:
    out = member.etcdctl("get", key, "--print-value-only", endpoints=endpoints)
    return out.rstrip("\n") if out else None


def _keys(member: Any, prefix: str) -> dict[str, str]:
    out = member.etcdctl("get", prefix, "--prefix", "-w", "json")
    import base64
    import json

    kvs = json.loads(out).get("kvs", [])
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in kvs
    }


def test_three_members_form_a_tls_cluster_through_learners(lab: Lab) -> None:
    first = lab.machine(1)
    first.bootstrap(TOKEN)
    assert first.wait_healthy(timeout=30)
    second = lab.machine(2)
    listed = first.add_learner(second.name, second.peer_url)
    added = next(m for m in listed if second.peer_url in m.peer_urls)
    assert added.is_learner
    assert not added.started
    second.start_joining(TOKEN, {first.name: first.peer_url})
    assert second.promote_self([first.client_url, second.client_url], wait=30)
    third = lab.machine(3)
    grow(first, third, TOKEN)

    members = first.member_list()
    assert sorted(m.name for m in members) == ["etcd-1", "etcd-2", "etcd-3"]
    assert not any(m.is_learner for m in members)
    assert all(u.startswith("https://") for m in members for u in (*m.peer_urls, *m.client_urls))
    urls = [m.client_url for m in (first, second, third)]
    assert first.endpoint_health(urls) == dict.fromkeys(urls, True)
    _put(first, "/kaji/hello", "world")
    assert _get(third, "/kaji/hello") == "world"
    leader = first.leader_id(urls)
    assert leader in {m.id for m in members}
    # Started as an existing member, with its initial cluster fixed at join time.
    record = third.join_record()
    assert record.state == "existing"
    assert "etcd-1=" in record.initial_cluster
    assert record.member_id == f"{next(m.id for m in members if m.name == 'etcd-3'):x}"


def test_settled_members_keep_running_and_restart_on_canonical_settings(lab: Lab) -> None:
    members = lab.cluster(3)
    _put(members[0], "/settled", "yes")
    pids = {m.name: m.host.services.pid(literals.SERVICE) for m in members}
    cluster = {m.name: m.peer_urls[0] for m in members[0].member_list()}
    assert cluster == {m.name: m.peer_url for m in members}
    for member in members:
        assert member.is_initialized()
        settled = member.settle(cluster)
        assert settled is not None
        assert member.ensure_running(settled) is ServiceChange.UNCHANGED
    # Rewriting the bootstrap settings restarted nothing; all three now render the same ones,
    # whether they bootstrapped the cluster (etcd-1, "new") or joined it as the second or third.
    assert {m.name: m.host.services.pid(literals.SERVICE) for m in members} == pids
    rendered = {m.name: json.loads(m.host.read_text(literals.CONFIG_FILE)) for m in members}
    bootstrap = {(c["initial-cluster"], c["initial-cluster-state"]) for c in rendered.values()}
    assert len(bootstrap) == 1
    assert rendered["etcd-1"]["initial-cluster-state"] == "existing"
    # A real change restarts each member onto the canonical settings, which etcd accepts (it
    # ignores them: its WAL exists); the cluster stays whole and keeps its data.
    changed = EtcdConfig.from_options({**_options(lab.config), "heartbeat-interval": 60})
    restarted = []
    for member in members:
        again = replace(member, config=changed)
        record = again.join_record()
        assert again.ensure_running(record) is ServiceChange.RESTARTED
        restarted.append(again)
        urls = [m.client_url for m in members]
        assert again.wait_healthy(urls, timeout=30), f"{again.name} did not come back"
    assert all(m.host.services.pid(literals.SERVICE) != pids[m.name] for m in restarted)
    assert sorted(m.name for m in members[0].member_list()) == ["etcd-1", "etcd-2", "etcd-3"]
    assert _get(restarted[2], "/settled", [restarted[2].client_url]) == "yes"


def _options(config: Any) -> dict[str, object]:
    """The charm options that produce ``config``."""
    return {
        "version": config.version,
        "release-mirror": config.mirror_url,
        "etcd-sha256": config.sha256,
        "client-port": config.client_port,
        "peer-port": config.peer_port,
        "heartbeat-interval": config.heartbeat_interval,
        "election-timeout": config.election_timeout,
        "snapshot-count": config.snapshot_count,
        "quota-backend-bytes": str(config.quota_backend_bytes),
        "auto-compaction-mode": config.auto_compaction_mode,
        "auto-compaction-retention": config.auto_compaction_retention,
    }


def test_every_acknowledged_write_survives_add_and_remove(lab: Lab) -> None:
    first, second, third = lab.cluster(3)
    endpoints = [first.client_url, third.client_url]
    acked: dict[str, str] = {}
    failures: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            key, value = f"/writer/{n:06d}", f"value-{n}"
            try:
                _put(first, key, value, endpoints)
            except EtcdError as error:
                failures.append(str(error).splitlines()[-1])
            else:
                acked[key] = value
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        fourth = lab.machine(4)
        grow(first, fourth, TOKEN)
        time.sleep(0.5)
        second_id = second.own_id()
        assert second_id is not None
        assert first.remove_safely(second_id, endpoints) is None
        second.retire_data("left")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert len(acked) > 20, f"the writer got too few writes through ({failures[:3]})"
    survivors = [first, third, fourth]
    assert sorted(m.name for m in first.member_list(endpoints)) == ["etcd-1", "etcd-3", "etcd-4"]
    for member in survivors:
        stored = _keys(member, "/writer/")
        missing = [k for k, v in acked.items() if stored.get(k) != v]
        assert not missing, f"{member.name} lost acknowledged writes: {missing[:5]}"


def test_removal_that_would_lose_quorum_is_refused(lab: Lab) -> None:
    first, second, third = lab.cluster(3)
    third.stop()  # already unhealthy: counts against quorum
    second_id = second.own_id()
    blocker = first.remove_safely(second_id, [first.client_url, second.client_url])
    assert blocker == ("removing etcd-2 would leave 1 healthy of 2 voting members (quorum 2)")
    assert len(first.member_list([first.client_url])) == 3


def test_member_removed_behind_its_back_rejoins_cleanly(lab: Lab) -> None:
    first, second, third = lab.cluster(3)
    _put(first, "/kept", "yes")
    third_id = third.own_id()
    first.remove_member(third_id)
    retired = third.retire_data("member-removed")
    assert retired is not None
    assert third.host.exists(f"{retired}/member")
    grow(first, third, TOKEN)
    assert third.own_id() != third_id
    assert _get(third, "/kept", [third.client_url]) == "yes"
    urls = [m.client_url for m in (first, second, third)]
    assert first.endpoint_health(urls) == dict.fromkeys(urls, True)


def test_clients_need_a_certificate_from_the_etcd_ca(lab: Lab, tmp_path: Path) -> None:
    (first,) = lab.cluster(1)
    etcdctl = first.binaries.etcdctl
    ca_file = first.path(literals.CA_FILE)
    base = [etcdctl, f"--endpoints={first.client_url}", f"--cacert={ca_file}"]
    base += ["--dial-timeout=2s", "--command-timeout=3s"]

    def client_cert(ca: pki.CertificateAuthority, name: str) -> list[str]:
        key = pki.generate_private_key()
        csr = pki.create_csr(key, expected_client_identity("control-plane/0"))
        (tmp_path / f"{name}.key").write_text(key)
        (tmp_path / f"{name}.crt").write_text(pki.sign_csr(csr, ca, pki.Profile.CLIENT))
        return [f"--cert={tmp_path / f'{name}.crt'}", f"--key={tmp_path / f'{name}.key'}"]

    good = first.host.run([*base, *client_cert(lab.ca, "good"), "put", "/client", "ok"])
    assert good.ok
    for argv in (
        [*base, "put", "/client", "no-cert"],
        [*base, *client_cert(pki.create_ca("another CA"), "foreign"), "put", "/client", "x"],
    ):
        with pytest.raises(CommandError):
            first.host.run(argv, timeout=30)
    assert _get(first, "/client") == "ok"


def test_snapshot_restores_into_a_fresh_cluster(lab: Lab) -> None:
    first, second, _third = lab.cluster(3)
    written = {f"/data/{n:03d}": f"v{n}" for n in range(50)}
    for key, value in written.items():
        _put(second, key, value)
    info = first.snapshot()
    assert info.size > 0
    assert info.revision >= 50
    assert info.path.startswith(literals.SNAPSHOT_DIR)
    snapshot = shutil.copy(first.path(info.path), lab.base / "snapshot.db")

    fresh = lab.machine(5)
    fresh.restore(str(snapshot), "kaji-etcd-restored")
    assert fresh.wait_healthy(timeout=30)
    assert _keys(fresh, "/data/") == written
    assert [m.name for m in fresh.member_list()] == ["etcd-5"]  # a new cluster, not the old
    sixth = lab.machine(6)
    grow(fresh, sixth, "kaji-etcd-restored")
    assert _keys(sixth, "/data/") == written


def test_invalid_snapshot_is_refused_and_data_kept(lab: Lab) -> None:
    (first,) = lab.cluster(1)
    _put(first, "/still", "here")
    bogus = lab.base / "bogus.db"
    bogus.write_bytes(b"not a snapshot" * 100)
    with pytest.raises(EtcdError, match="not a valid snapshot"):
        first.restore(str(bogus), "kaji-etcd-other")
    assert _get(first, "/still") == "here"

"""Shared builders for the etcd charm's unit tests: peer units, CA data, an in-memory etcd."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kaji_etcd import EtcdError, binaries
from kaji_etcd.binaries import Binaries
from kaji_etcd.literals import CA_SECRET_LABEL, DATA_DIR
from kaji_etcd.member import JoinRecord, Member
from kaji_etcd.membership import MemberInfo
from ops import testing

from kaji import pki
from kaji.interfaces.etcd import expected_client_identity
from kaji.interfaces.etcd_peers import EtcdPeerApp, EtcdPeerUnit, expected_member_identity

ADDRESS = "192.0.2.0"  # ops.testing's default ingress address for every binding


def ca_secret(ca: pki.CertificateAuthority) -> testing.Secret:
    return testing.Secret(
        {"cert": ca.cert_pem, "key": ca.key_pem}, label=CA_SECRET_LABEL, owner="app"
    )


@dataclass
class PeerUnit:
    """A simulated other etcd unit: its key, CSR and databag."""

    name: str
    address: str
    hostname: str
    key: str = field(init=False)
    data: EtcdPeerUnit = field(init=False)

    def __post_init__(self) -> None:
        self.key = pki.generate_private_key()
        identity = expected_member_identity(self.name, self.hostname, [self.address])
        member = self.name.replace("/", "-")
        self.data = EtcdPeerUnit(
            member_name=member,
            hostname=self.hostname,
            addresses=(self.address,),
            peer_url=f"https://{self.address}:2380",
            client_url=f"https://{self.address}:2379",
            peer_csr=pki.create_csr(self.key, identity),
        )

    @property
    def number(self) -> int:
        return int(self.name.split("/")[1])

    def bag(self, **extra: str) -> dict[str, str]:
        return {**self.data.to_databag(), "ingress-address": self.address, **extra}

    def certificate(self, ca: pki.CertificateAuthority) -> str:
        return pki.sign_csr(self.data.peer_csr, ca, pki.Profile.PEER)


def peer_units(*numbers: int) -> list[PeerUnit]:
    return [PeerUnit(f"etcd/{n}", f"10.0.0.{10 + n}", f"machine-{n}") for n in numbers]


def app_bag(
    ca: pki.CertificateAuthority,
    members: dict[str, str],
    certificates: dict[str, str],
    state: str = "existing",
    token: str = "kaji-etcd-test",
    **extra: Any,
) -> dict[str, str]:
    app = EtcdPeerApp(
        ca_cert=ca.cert_pem,
        cluster_token=token,
        cluster_state=state,
        members=members,
        certificates=certificates,
    )
    return {**app.to_databag(), **{k: json.dumps(v) for k, v in extra.items()}}


def client_csr(unit: str, key: str | None = None) -> str:
    return pki.create_csr(key or pki.generate_private_key(), expected_client_identity(unit))


def peer_relation(
    units: list[PeerUnit],
    local_app_data: dict[str, str] | None = None,
    local_unit_data: dict[str, str] | None = None,
) -> testing.PeerRelation:
    return testing.PeerRelation(
        "cluster",
        peers_data={u.number: u.bag() for u in units},
        local_app_data=local_app_data or {},
        local_unit_data=local_unit_data or {},
    )


def peer_app(state: testing.State) -> dict[str, str]:
    return dict(state.get_relations("cluster")[0].local_app_data)


def decoded(bag: dict[str, str]) -> dict[str, Any]:
    juju = ("ingress-address", "egress-subnets", "private-address")
    return {k: json.loads(v) for k, v in bag.items() if k not in juju}


class FakeEtcd:
    """An in-memory etcd cluster driven through Member's methods."""

    def __init__(self) -> None:
        self.members: dict[int, MemberInfo] = {}
        self.unhealthy: set[int] = set()
        self.leader: int | None = None
        self.next_id = 0x1000
        self.calls: list[tuple[str, ...]] = []
        self.promotable = True
        self.reachable = True

    def add(self, name: str, address: str, learner: bool = False, started: bool = True) -> int:
        self.next_id += 1
        self.members[self.next_id] = MemberInfo(
            id=self.next_id,
            name=name if started else "",
            peer_urls=(f"https://{address}:2380",),
            client_urls=(f"https://{address}:2379",) if started else (),
            is_learner=learner,
        )
        if self.leader is None:
            self.leader = self.next_id
        return self.next_id

    def by_name(self, name: str) -> MemberInfo:
        return next(m for m in self.members.values() if m.name == name)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = self
        real_ensure_running = Member.ensure_running

        def ensure_binaries(host: Any, config: Any, resource: Any = None) -> Binaries:
            return Binaries("/usr/bin/etcd", "/usr/bin/etcdctl", live=True)

        def check() -> None:
            if not fake.reachable:
                raise EtcdError("context deadline exceeded")

        def member_list(self: Member, endpoints: Any = None) -> list[Any]:
            check()
            fake.calls.append(("member-list",))
            return sorted(fake.members.values(), key=lambda m: m.id)

        def add_learner(self: Member, name: str, peer_url: str, endpoints: Any = None):
            check()
            fake.calls.append(("add", name, peer_url))
            address = peer_url.split("//")[1].rsplit(":", 1)[0]
            fake.add(name, address, learner=True, started=False)
            return member_list(self)

        def promote(self: Member, member_id: int, endpoints: Any = None) -> None:
            check()
            if not fake.promotable:
                raise EtcdError("can only promote a learner member which is in sync")
            fake.calls.append(("promote", f"{member_id:x}"))
            m = fake.members[member_id]
            fake.members[member_id] = MemberInfo(m.id, m.name, m.peer_urls, m.client_urls, False)

        def remove_member(self: Member, member_id: int, endpoints: Any = None) -> None:
            check()
            fake.calls.append(("remove", f"{member_id:x}"))
            del fake.members[member_id]

        def endpoint_health(self: Member, endpoints: Any) -> dict[str, bool]:
            check()
            bad = {
                u for i in fake.unhealthy if i in fake.members for u in fake.members[i].client_urls
            }
            return {e: e not in bad for e in endpoints}

        def own_id(self: Member) -> int | None:
            return next(
                (m.id for m in fake.members.values() if self.peer_url in m.peer_urls), None
            )

        def leader_id(self: Member, endpoints: Any) -> int | None:
            return fake.leader

        def ensure_running(self: Member, record: JoinRecord):
            change = real_ensure_running(self, record)
            for m in list(fake.members.values()):
                if self.peer_url in m.peer_urls and not m.started:
                    fake.members[m.id] = MemberInfo(
                        m.id, self.name, m.peer_urls, (self.client_url,), m.is_learner
                    )
            if not fake.members and record.state == "new":
                fake.add(self.name, self.address)
            if any(self.peer_url in m.peer_urls for m in fake.members.values()):
                make_wal(self)  # a started member has made its data directory
            return change

        monkeypatch.setattr(binaries, "ensure_binaries", ensure_binaries)
        find = lambda host: ensure_binaries(host, None)  # noqa: E731
        monkeypatch.setattr(binaries, "find_binaries", find)
        for name, fn in {
            "member_list": member_list,
            "add_learner": add_learner,
            "promote": promote,
            "remove_member": remove_member,
            "endpoint_health": endpoint_health,
            "own_id": own_id,
            "leader_id": leader_id,
            "ensure_running": ensure_running,
        }.items():
            monkeypatch.setattr(Member, name, fn)


def make_wal(member: Member) -> None:
    """What etcd does when it first starts: a WAL in ``<data-dir>/member/wal``."""
    wal = member.host.path(f"{DATA_DIR}/member/wal")
    wal.mkdir(parents=True, exist_ok=True)
    (wal / "0000000000000000-0000000000000000.wal").touch()


DEFAULT_CONFIG: dict[str, str | int] = {
    "version": "3.5.17",
    "release-mirror": "https://github.com/etcd-io/etcd/releases/download",
    "etcd-sha256": "",
    "client-port": 2379,
    "peer-port": 2380,
    "heartbeat-interval": 100,
    "election-timeout": 1000,
    "snapshot-count": 10000,
    "quota-backend-bytes": "2GiB",
    "auto-compaction-mode": "periodic",
    "auto-compaction-retention": "1h",
}


def unit_context(unit_id: int) -> testing.Context:
    from charm import EtcdCharm

    return testing.Context(EtcdCharm, app_name="etcd", unit_id=unit_id)


def own_csr(state: testing.State) -> str:
    return json.loads(state.get_relations("cluster")[0].local_unit_data["peer-csr"])


def _by_peer(self: FakeEtcd, url: str) -> MemberInfo:
    return next(m for m in self.members.values() if url in m.peer_urls)


def _start(self: FakeEtcd, peer_url: str, name: str, promote: bool) -> None:
    m = self.by_peer(peer_url)
    client = peer_url.replace(":2380", ":2379")
    self.members[m.id] = MemberInfo(
        m.id, name, m.peer_urls, (client,), m.is_learner and not promote
    )


FakeEtcd.by_peer = _by_peer  # type: ignore[attr-defined]
FakeEtcd.start = _start  # type: ignore[attr-defined]


# --- what a dispatch changed ------------------------------------------------------------------


def machine_tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under a sandbox root: its mode and a digest of its content (or link)."""
    tree: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            digest = f"-> {os.readlink(path)}"
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest = "dir"
        tree[str(path.relative_to(root))] = (info.st_mode, digest)
    return tree


def relation_bags(state: testing.State) -> dict[int, dict[str, dict[str, str]]]:
    """This unit's own bags (the ones it may write) of every relation, by relation id."""
    return {
        r.id: {"app": dict(r.local_app_data), "unit": dict(r.local_unit_data)}
        for r in state.relations
    }


def secret_contents(state: testing.State) -> set[tuple[str | None, str]]:
    """Every secret's label and content (tracked and latest), comparable across states."""
    return {
        (s.label, json.dumps([s.tracked_content, s.latest_content], sort_keys=True))
        for s in state.secrets
    }

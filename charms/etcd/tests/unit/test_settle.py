"""Once a member has joined, its initial-* settings are canonical, and rewriting them never
restarts etcd: any join order of the same units ends with the same files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import (
    ADDRESS,
    DEFAULT_CONFIG,
    FakeEtcd,
    app_bag,
    make_wal,
    own_csr,
    peer_relation,
    peer_units,
    unit_context,
)
from kaji_etcd import literals
from kaji_etcd.binaries import Binaries
from kaji_etcd.config import EtcdConfig
from kaji_etcd.literals import (
    BOOTSTRAP_KEYS,
    CA_FILE,
    CONFIG_DIGEST_ENV,
    DATA_DIR,
    SERVICE,
)
from kaji_etcd.member import JoinRecord, Member
from ops import testing

from kaji import pki
from kaji.host import Host, RecordingManager, ServiceChange

CONFIG_FILE = "etc/kaji/etcd/etcd.conf.yml"
JOIN_RECORD = "var/lib/kaji/etcd/member.json"
SERVICE_STATE = "var/lib/kaji/services/etcd.json"
URLS = {n: f"https://10.0.0.1{n}:2380" for n in range(3)}


def _config(root: Path) -> dict[str, object]:
    return json.loads((root / CONFIG_FILE).read_text())


def _service(root: Path) -> dict[str, object]:
    return json.loads((root / SERVICE_STATE).read_text())


# --- the workload: Member.settle and the restart digest -----------------------------------------


def _member(root: Path, *, live: bool, **options: object) -> Member:
    host = Host(root, RecordingManager(root / "var/lib/kaji/services"))
    config = EtcdConfig.from_options({**DEFAULT_CONFIG, **options})
    binaries = Binaries("/usr/bin/etcd", "/usr/bin/etcdctl", live=live)
    return Member(host, config, binaries, "etcd-1", "10.0.0.11")


def _joined(member: Member) -> JoinRecord:
    """etcd-1 started as the second member of a two-member cluster."""
    record = member.start_joining("kaji-etcd-t", {"etcd-0": URLS[0]})
    assert record.initial_cluster == f"etcd-0={URLS[0]},etcd-1={URLS[1]}"
    return record


def test_settling_rewrites_bootstrap_keys_without_a_restart(tmp_path: Path) -> None:
    member = _member(tmp_path, live=True)
    _joined(member)
    make_wal(member)
    spec_before = member.host.services.get(SERVICE)

    settled = member.settle({"etcd-2": URLS[2], "etcd-0": URLS[0], "etcd-1": URLS[1]})

    assert settled is not None
    expected = f"etcd-0={URLS[0]},etcd-1={URLS[1]},etcd-2={URLS[2]}"
    config = _config(tmp_path)
    assert (config["initial-cluster"], config["initial-cluster-state"]) == (expected, "existing")
    assert config["initial-cluster-token"] == "kaji-etcd-t"
    assert member.join_record() == settled
    # The restart decision ignores the bootstrap keys: ensuring the service changes nothing.
    assert member.ensure_running(settled) is ServiceChange.UNCHANGED
    assert member.host.services.get(SERVICE) == spec_before
    state = _service(tmp_path)
    assert (state["starts"], state.get("restarts", 0)) == (1, 0)


def test_real_config_change_still_restarts(tmp_path: Path) -> None:
    member = _joined_and_settled(tmp_path)
    changed = _member(tmp_path, live=True, **{"heartbeat-interval": 150})
    record = changed.join_record()
    assert record is not None
    assert changed.ensure_running(record) is ServiceChange.RESTARTED
    assert _config(tmp_path)["heartbeat-interval"] == 150
    assert changed.service_spec().env != member.service_spec().env
    assert _service(tmp_path)["restarts"] == 1


def _joined_and_settled(root: Path) -> Member:
    member = _member(root, live=True)
    _joined(member)
    make_wal(member)
    assert member.settle({"etcd-0": URLS[0], "etcd-1": URLS[1]}) is not None
    return member


def test_member_without_a_wal_keeps_its_join_settings(tmp_path: Path) -> None:
    member = _member(tmp_path, live=True)
    joined = _joined(member)
    before = (tmp_path / CONFIG_FILE).read_bytes()
    three = {"etcd-0": URLS[0], "etcd-1": URLS[1], "etcd-2": URLS[2]}
    # etcd has not made its data yet: its next start still needs the join settings.
    (tmp_path / "var/lib/kaji/etcd/data/member/wal").mkdir(parents=True)
    assert member.settle(three) is None
    assert (tmp_path / CONFIG_FILE).read_bytes() == before
    assert member.join_record() == joined
    make_wal(member)
    assert member.settle(three) is not None
    assert (tmp_path / CONFIG_FILE).read_bytes() != before


def test_member_not_listed_or_not_started_is_not_settled(tmp_path: Path) -> None:
    member = _member(tmp_path, live=False)
    assert member.settle({"etcd-1": URLS[1]}) is None  # no join record yet
    record = _joined(member)
    assert member.settle({"etcd-0": URLS[0]}) is None  # not a member any more
    member.stop()
    assert member.settle({"etcd-0": URLS[0], "etcd-1": URLS[1]}) is None  # never started
    assert member.join_record() == record


def test_restart_digest_ignores_sandbox_root_and_config_file_is_not_watched(
    tmp_path: Path,
) -> None:
    first, second = _member(tmp_path / "a", live=True), _member(tmp_path / "b", live=True)
    assert first.config_digest() == second.config_digest()
    spec = first.service_spec()
    assert spec.env[CONFIG_DIGEST_ENV] == first.config_digest()
    assert first.path(literals.CONFIG_FILE) not in spec.watched_files
    assert first.path(CA_FILE) in spec.watched_files
    settings = first.runtime_settings()
    assert not set(BOOTSTRAP_KEYS) & set(settings)
    assert settings["data-dir"] == first.path(DATA_DIR)
    assert first.runtime_settings(machine_paths=True)["data-dir"] == DATA_DIR


# --- the charm: a joined unit settles; join order does not show ---------------------------------


def _unit_state(
    ca: pki.CertificateAuthority, members: dict[str, str], cert: str | None, **unit_data: str
) -> testing.State:
    """etcd/1's view: the leader etcd/0 published ``members`` (and etcd/1's certificate)."""
    leader = peer_units(0)[0]
    certificates = {leader.name: leader.certificate(ca)}
    if cert:
        certificates["etcd/1"] = cert
    relation = peer_relation(
        [leader], local_app_data=app_bag(ca, members, certificates), local_unit_data=unit_data
    )
    return testing.State(relations={relation})


def _join(
    ca: pki.CertificateAuthority, members_at_join: dict[str, str], later: list[dict[str, str]]
) -> testing.State:
    """etcd/1 installs, starts when ``members_at_join`` are published, then sees ``later``."""
    ctx = unit_context(1)
    state = ctx.run(ctx.on.install(), _unit_state(ca, members_at_join, None))
    cert = pki.sign_csr(own_csr(state), ca, pki.Profile.PEER)
    unit_bag = dict(state.get_relations("cluster")[0].local_unit_data)
    for members in (members_at_join, *later):
        state = ctx.run(ctx.on.config_changed(), _unit_state(ca, members, cert, **unit_bag))
        unit_bag = dict(state.get_relations("cluster")[0].local_unit_data)
    return state


def _rendered(root: Path) -> dict[str, bytes]:
    return {
        name: (root / name).read_bytes().replace(str(root).encode(), b"<root>")
        for name in (CONFIG_FILE, JOIN_RECORD)
    }


def _two_members() -> dict[str, str]:
    return {"etcd-0": "https://10.0.0.10:2380", "etcd-1": f"https://{ADDRESS}:2380"}


def _three_members() -> dict[str, str]:
    return {**_two_members(), "etcd-2": "https://10.0.0.12:2380"}


def test_recorded_join_orders_end_with_identical_files(
    ca: pki.CertificateAuthority, sandbox: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Order A: etcd/1 is added second, etcd/2 after it.
    _join(ca, _two_members(), [_three_members()])
    first = _rendered(sandbox)
    # Order B: etcd/2 was added first; etcd/1 joins a cluster of three.
    other = tmp_path / "machine-b"
    other.mkdir()
    monkeypatch.setenv("KAJI_HOST_ROOT", str(other))
    state = _join(ca, _three_members(), [])
    assert _rendered(other) == first
    config = _config(other)
    assert config["initial-cluster"] == ",".join(f"{n}={u}" for n, u in _three_members().items())
    assert config["initial-cluster-state"] == "existing"
    assert state.unit_status == testing.ActiveStatus(
        "3 members (etcd not running on this machine: recorded only)"
    )


def _live_join(
    ca: pki.CertificateAuthority, fake: FakeEtcd, etcd2_first: bool
) -> tuple[testing.State, int]:
    """etcd/1 joins a FakeEtcd cluster before or after etcd-2; returns its state and id."""
    fake.add("etcd-0", "10.0.0.10")  # 0x1001
    if etcd2_first:
        fake.next_id = 0x1002  # the same member IDs in both orders (etcd's own choice)
        fake.add("etcd-2", "10.0.0.12")
        fake.next_id = 0x1001
    own = fake.add("etcd-1", ADDRESS, learner=True, started=False)
    if etcd2_first:
        return _join(ca, _three_members(), []), own
    state = _join(ca, _two_members(), [])
    fake.next_id = 0x1002
    fake.add("etcd-2", "10.0.0.12")
    return _join_more(ca, state, _three_members()), own


def _join_more(
    ca: pki.CertificateAuthority, state: testing.State, members: dict[str, str]
) -> testing.State:
    ctx = unit_context(1)
    relation = state.get_relations("cluster")[0]
    bag = {**relation.local_app_data, **app_bag(ca, members, {})}
    bag["certificates"] = relation.local_app_data["certificates"]
    grown = peer_relation(peer_units(0), bag, dict(relation.local_unit_data))
    return ctx.run(ctx.on.relation_changed(grown), testing.State(relations={grown}))


def test_live_join_orders_end_with_identical_files_and_no_restart(
    ca: pki.CertificateAuthority, sandbox: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeEtcd()
    fake.install(monkeypatch)
    state, own = _live_join(ca, fake, etcd2_first=False)
    assert json.loads(state.get_relations("cluster")[0].local_unit_data["member-id"]) == f"{own:x}"
    first = _rendered(sandbox)
    record = _service(sandbox)
    assert (record["starts"], record.get("restarts", 0)) == (1, 0)

    other = tmp_path / "machine-b"
    other.mkdir()
    monkeypatch.setenv("KAJI_HOST_ROOT", str(other))
    second_fake = FakeEtcd()
    second_fake.install(monkeypatch)
    _live_join(ca, second_fake, etcd2_first=True)
    assert _rendered(other) == first
    assert json.loads(first[JOIN_RECORD]) == {
        "initial-cluster": ",".join(f"{n}={u}" for n, u in _three_members().items()),
        "member-id": None,  # this test's leader publishes no member-ids
        "state": "existing",
        "token": "kaji-etcd-test",
    }


def test_joined_member_settles_in_a_hook_that_neither_restarts_nor_rewrites_again(
    ca: pki.CertificateAuthority, sandbox: Path, fake_etcd: FakeEtcd
) -> None:
    fake_etcd.add("etcd-0", "10.0.0.10")
    fake_etcd.add("etcd-1", ADDRESS, learner=True, started=False)
    state = _join(ca, _two_members(), [])
    assert _config(sandbox)["initial-cluster"] == ",".join(
        f"{n}={u}" for n, u in _two_members().items()
    )
    fake_etcd.add("etcd-2", "10.0.0.12")
    ctx = unit_context(1)
    relation = state.get_relations("cluster")[0]
    bag = {**relation.local_app_data, **app_bag(ca, _three_members(), {})}
    bag["certificates"] = relation.local_app_data["certificates"]
    grown = testing.State(
        relations={peer_relation(peer_units(0), bag, dict(relation.local_unit_data))}
    )
    with ctx(ctx.on.relation_changed(next(iter(grown.relations))), grown) as manager:
        state = manager.run()
        stats = manager.charm.host.stats
        assert stats.services_restarted == stats.services_started == 0
    assert "etcd-2=" in str(_config(sandbox)["initial-cluster"])
    assert state.unit_status == testing.ActiveStatus("healthy, 3 members, leader etcd/0")
    # Nothing new: the next hook writes nothing.
    again = testing.State(relations=state.relations)
    with ctx(ctx.on.config_changed(), again) as manager:
        manager.run()
        assert manager.charm.host.stats.files_written == 0


def test_learner_keeps_its_join_settings(
    ca: pki.CertificateAuthority,
    sandbox: Path,
    fake_etcd: FakeEtcd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(literals, "PROMOTE_WAIT", 0)
    fake_etcd.promotable = False
    fake_etcd.add("etcd-0", "10.0.0.10")
    fake_etcd.add("etcd-1", ADDRESS, learner=True, started=False)
    state = _join(ca, _two_members(), [])
    state = _join_more(ca, state, _three_members())
    assert state.unit_status == testing.WaitingStatus("learner: catching up before promotion")
    config = _config(sandbox)
    assert config["initial-cluster"] == ",".join(f"{n}={u}" for n, u in _two_members().items())

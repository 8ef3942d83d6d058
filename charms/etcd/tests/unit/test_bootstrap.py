"""The first unit bootstraps the cluster; reconciling again with nothing new changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import ADDRESS, ca_secret, decoded, peer_app
from kaji_etcd.literals import CA_SECRET_LABEL, CONFIG_DIGEST_ENV
from kaji_etcd.member import JoinRecord, Member
from ops import testing

from kaji import pki


def _leader_state() -> testing.State:
    return testing.State(leader=True, relations={testing.PeerRelation("cluster")})


def test_first_leader_creates_ca_signs_itself_and_bootstraps(
    ctx: testing.Context, sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started_with: list[tuple[str, str]] = []
    real_ensure_running = Member.ensure_running

    def ensure_running(self: Member, record: JoinRecord):
        started_with.append((record.state, record.initial_cluster))
        return real_ensure_running(self, record)

    monkeypatch.setattr(Member, "ensure_running", ensure_running)
    state = ctx.run(ctx.on.install(), _leader_state())

    secret = next(s for s in state.secrets if s.label == CA_SECRET_LABEL)
    assert secret.owner == "app"
    app = decoded(peer_app(state))
    assert app["ca-cert"] == secret.tracked_content["cert"]
    assert app["members"] == {"etcd-0": f"https://{ADDRESS}:2380"}
    assert app["cluster-state"] == "existing"  # the bootstrap member was started in this hook
    assert app["recorded-only"] is True
    cert = app["certificates"]["etcd/0"]
    pki.verify_chain(cert, app["ca-cert"], pki.Profile.PEER)
    assert pki.read_certificate(cert).identity.common_name == "etcd/0"

    # etcd first starts as a new one-member cluster; once started (the recorded stand-in for
    # "its data directory exists") the bootstrap settings are rendered canonically.
    assert started_with == [("new", f"etcd-0=https://{ADDRESS}:2380")]
    config = json.loads((sandbox / "etc/kaji/etcd/etcd.conf.yml").read_text())
    assert config["initial-cluster-state"] == "existing"
    assert config["initial-cluster"] == f"etcd-0=https://{ADDRESS}:2380"
    assert config["listen-client-urls"] == f"https://{ADDRESS}:2379"
    for side in ("client-transport-security", "peer-transport-security"):
        assert config[side]["client-cert-auth"] is True
    assert config["data-dir"] == str(sandbox / "var/lib/kaji/etcd/data")
    key = sandbox / "etc/kaji/etcd/pki/member.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" not in json.dumps(dict(state.get_relations("cluster")[0].local_unit_data))
    assert state.unit_status == testing.ActiveStatus(
        "1 member (etcd not running on this machine: recorded only)"
    )


def test_unit_data_describes_the_member(ctx: testing.Context) -> None:
    state = ctx.run(ctx.on.install(), _leader_state())
    unit = decoded(dict(state.get_relations("cluster")[0].local_unit_data))
    assert unit["member-name"] == "etcd-0"
    assert unit["hostname"] == "machine-0"
    assert unit["addresses"] == [ADDRESS]
    assert unit["client-url"] == f"https://{ADDRESS}:2379"
    assert pki.read_csr(unit["peer-csr"]).common_name == "etcd/0"


def test_second_reconcile_changes_nothing(ctx: testing.Context, sandbox: Path) -> None:
    state = ctx.run(ctx.on.install(), _leader_state())
    before = (peer_app(state), dict(state.get_relations("cluster")[0].local_unit_data))
    for event in (ctx.on.config_changed(), ctx.on.update_status(), ctx.on.leader_elected()):
        with ctx(event, state) as manager:
            state = manager.run()
            stats = manager.charm.host.stats
            assert stats.files_written == 0, event
            assert stats.services_restarted == stats.services_started == 0, event
        after = (peer_app(state), dict(state.get_relations("cluster")[0].local_unit_data))
        assert after == before
    record = json.loads((sandbox / "var/lib/kaji/services/etcd.json").read_text())
    assert record["starts"] == 1
    assert record.get("restarts", 0) == 0


def test_new_leader_reuses_the_ca(ctx: testing.Context, ca: pki.CertificateAuthority) -> None:
    state = ctx.run(
        ctx.on.leader_elected(),
        testing.State(
            leader=True, relations={testing.PeerRelation("cluster")}, secrets={ca_secret(ca)}
        ),
    )
    assert decoded(peer_app(state))["ca-cert"] == ca.cert_pem
    assert [s.label for s in state.secrets] == [CA_SECRET_LABEL]


def test_non_leader_waits_for_the_leader(ctx: testing.Context, sandbox: Path) -> None:
    state = ctx.run(ctx.on.install(), testing.State(relations={testing.PeerRelation("cluster")}))
    assert state.unit_status == testing.WaitingStatus(
        "waiting for the leader to create the cluster CA"
    )
    assert not (sandbox / "var/lib/kaji/etcd/member.json").exists()


def test_without_peer_relation_waits(ctx: testing.Context) -> None:
    state = ctx.run(ctx.on.install(), testing.State(leader=True))
    assert state.unit_status == testing.WaitingStatus("waiting for the peer relation")


def test_config_change_restarts_with_new_settings(ctx: testing.Context, sandbox: Path) -> None:
    state = ctx.run(ctx.on.install(), _leader_state())
    service = json.loads((sandbox / "var/lib/kaji/services/etcd.json").read_text())
    first_digest = service["spec"]["environment"][CONFIG_DIGEST_ENV]
    state = ctx.run(
        ctx.on.config_changed(),
        testing.State(
            leader=True,
            relations=state.relations,
            secrets=state.secrets,
            config={"heartbeat-interval": 200, "election-timeout": 2000},
        ),
    )
    config = json.loads((sandbox / "etc/kaji/etcd/etcd.conf.yml").read_text())
    assert (config["heartbeat-interval"], config["election-timeout"]) == (200, 2000)
    record = json.loads((sandbox / "var/lib/kaji/services/etcd.json").read_text())
    assert record["restarts"] == 1
    assert record["spec"]["environment"][CONFIG_DIGEST_ENV] != first_digest
    assert config["initial-cluster-state"] == "existing"  # settled: the member has started


def test_new_leader_keeps_the_cluster_it_inherits(
    ca: pki.CertificateAuthority, sandbox: Path
) -> None:
    from builders import app_bag, own_csr, peer_relation, peer_units, unit_context

    ctx = unit_context(1)
    old_leader = peer_units(0)[0]
    members = {"etcd-0": old_leader.data.peer_url, "etcd-1": f"https://{ADDRESS}:2380"}
    first = ctx.run(ctx.on.install(), testing.State(relations={peer_relation([old_leader])}))
    certificates = {
        "etcd/0": old_leader.certificate(ca),
        "etcd/1": pki.sign_csr(own_csr(first), ca, pki.Profile.PEER),
    }
    bag = app_bag(ca, members, certificates, token="kaji-etcd-inherited")
    state = testing.State(
        leader=True,
        relations={peer_relation([old_leader], local_app_data=bag)},
        secrets={ca_secret(ca)},
    )
    state = ctx.run(ctx.on.leader_elected(), state)
    app = decoded(peer_app(state))
    assert app["cluster-token"] == "kaji-etcd-inherited"
    assert app["members"] == members
    assert app["ca-cert"] == ca.cert_pem
    assert app["certificates"] == certificates  # still good: nothing reissued
    config = json.loads((sandbox / "etc/kaji/etcd/etcd.conf.yml").read_text())
    assert config["initial-cluster-state"] == "existing"


def test_behind_nat_etcd_listens_on_the_bind_address_and_advertises_the_ingress(
    ctx: testing.Context, sandbox: Path
) -> None:
    """Other units reach the ingress address; etcd can only bind the machine's own one."""
    network = testing.Network(
        "cluster",
        bind_addresses=[testing.BindAddress([testing.Address("10.9.0.5")])],
        ingress_addresses=["203.0.113.5"],
    )
    state = ctx.run(
        ctx.on.install(),
        testing.State(
            leader=True, relations={testing.PeerRelation("cluster")}, networks={network}
        ),
    )
    config = json.loads((sandbox / "etc/kaji/etcd/etcd.conf.yml").read_text())
    assert config["listen-client-urls"] == "https://10.9.0.5:2379"
    assert config["listen-peer-urls"] == "https://10.9.0.5:2380"
    assert config["advertise-client-urls"] == "https://203.0.113.5:2379"
    assert config["initial-advertise-peer-urls"] == "https://203.0.113.5:2380"
    unit = decoded(dict(state.get_relations("cluster")[0].local_unit_data))
    assert unit["peer-url"] == "https://203.0.113.5:2380"
    assert "10.9.0.5" not in json.dumps(unit)  # the bind address is never advertised

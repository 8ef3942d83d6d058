"""Offline-model test charm: records every event it sees, as it saw it.

Each unit appends one JSON line per dispatch to ``$KAJI_TEST_RECORDER_DIR/events.jsonl`` (or to
``/var/log/recorder/<unit>.jsonl`` on its machine): the unit, the hook (or action), whether the
unit was leader, the remote unit and application, the relation's units, the secret revision,
the clock (``kaji.clock``) and ``VERSION``. Besides, it behaves: the leader publishes ``word``
and a shared secret (rotating and expiring as configured) in the feed's application data;
consumers read the secret; with ``cert-days`` each unit keeps a self-signed certificate and
renews it when a third of its life is left.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import ops

from kaji import clock, pki
from kaji.host import host_from_environment

#: Bumped by the refresh test to tell new code from old.
VERSION = "1"
CERT = "/etc/recorder/cert.pem"


class RecorderCharm(ops.CharmBase):
    """Records, then acts."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        for name, source in self.on.events().items():
            if name.startswith("collect_"):
                continue
            framework.observe(source, self._record)
        for event in (
            self.on.install,
            self.on.config_changed,
            self.on.update_status,
            self.on.upgrade_charm,
            self.on.leader_elected,
            self.on.feed_relation_created,
            self.on.feed_relation_joined,
            self.on.mates_relation_changed,
        ):
            framework.observe(event, self._publish)
        framework.observe(self.on.source_relation_changed, self._consume)
        framework.observe(self.on.secret_changed, self._consume)
        framework.observe(self.on.secret_rotate, self._rotate)
        framework.observe(self.on.secret_expired, self._expired)
        framework.observe(self.on.secret_remove, self._remove)
        framework.observe(self.on.describe_action, self._describe)
        framework.observe(self.on.fail_action, self._fail)
        framework.observe(self.on.crash_action, self._crash)
        framework.observe(self.on.touch_action, self._touch)
        framework.observe(self.on.collect_unit_status, self._status)
        self.host = host_from_environment()

    # -- recording ----------------------------------------------------------------------------

    def _record(self, event: ops.EventBase, **extra: Any) -> None:
        dispatch = os.environ.get("JUJU_DISPATCH_PATH", "")
        entry: dict[str, Any] = {
            "hook": dispatch.split("/", 1)[-1],
            "leader": self.unit.is_leader(),
            "time": clock.time(),
            "version": VERSION,
        }
        if isinstance(event, ops.RelationEvent):
            entry["relation"] = event.relation.name
            entry["remote_unit"] = event.unit.name if event.unit else None
            entry["remote_app"] = event.app.name if event.app else None
            entry["units"] = sorted(u.name for u in event.relation.units)
        if isinstance(event, ops.RelationDepartedEvent) and event.departing_unit:
            entry["departing"] = event.departing_unit.name
        if isinstance(event, ops.SecretEvent):
            entry["secret"] = event.secret.label
        if isinstance(event, (ops.SecretExpiredEvent, ops.SecretRemoveEvent)):
            entry["revision"] = event.revision
        if isinstance(event, (ops.InstallEvent, ops.UpgradeCharmEvent)):
            entry["blob"] = self._blob()
        entry.update(extra)
        _append(self.host, self.unit.name, "jsonl", entry)

    def _blob(self) -> str | None:
        try:
            return self.model.resources.fetch("blob").read_text()
        except (ops.ModelError, NameError):
            return None

    # -- behaving -----------------------------------------------------------------------------

    def _publish(self, _: ops.EventBase) -> None:
        for relation in self.model.relations["feed"]:
            if relation.data[self.unit].get("unit") != self.unit.name:
                relation.data[self.unit]["unit"] = self.unit.name
        self._certificate()
        if not self.unit.is_leader():
            return
        secret = self._shared_secret()
        for relation in self.model.relations["feed"]:
            secret.grant(relation)
            bag = relation.data[self.app]
            wanted = {"word": str(self.config["word"]), "secret-id": str(secret.id)}
            for key, value in wanted.items():
                if bag.get(key) != value:
                    bag[key] = value
        mates = self.model.get_relation("mates")
        if mates is not None and mates.data[self.app].get("leader") != self.unit.name:
            mates.data[self.app]["leader"] = self.unit.name

    def _expire(self) -> Any:
        minutes = int(self.config["expire-minutes"])
        return clock.now() + timedelta(minutes=minutes) if minutes > 0 else None

    def _shared_secret(self) -> ops.Secret:
        try:
            return self.model.get_secret(label="shared")
        except ops.SecretNotFoundError:
            rotate = str(self.config["rotate"])
            return self.app.add_secret(
                {"count": "1"},
                label="shared",
                rotate=ops.SecretRotate(rotate) if rotate else None,
                expire=self._expire(),
            )

    def _consume(self, event: ops.EventBase) -> None:
        relation = self.model.get_relation("source")
        if relation is None or relation.app is None:
            return
        secret_id = relation.data[relation.app].get("secret-id")
        if not secret_id:
            return
        content = self.model.get_secret(id=secret_id).get_content(refresh=True)
        path = self.host.path("/etc/recorder/shared")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content["count"] + "\n")

    def _new_revision(self, secret: ops.Secret) -> None:
        n = int(secret.get_content(refresh=True)["count"]) + 1
        secret.set_content({"count": str(n)})
        expire = self._expire()
        if expire is not None:
            secret.set_info(expire=expire)

    def _rotate(self, event: ops.SecretRotateEvent) -> None:
        self._new_revision(event.secret)

    def _expired(self, event: ops.SecretExpiredEvent) -> None:
        if self.config["remove-expired"]:
            self._new_revision(event.secret)
            event.remove_revision()

    def _remove(self, event: ops.SecretRemoveEvent) -> None:
        event.remove_revision()

    def _certificate(self) -> None:
        days = int(self.config["cert-days"])
        if days <= 0:
            return
        path = self.host.path(CERT)
        current = path.read_text() if path.exists() else None
        if current is not None:
            expired = pki.read_certificate(current).not_after <= clock.now()
            self._note("cert-check", expired=expired)
            if not pki.renewal_due(current):
                return
        ca = pki.create_ca(self.unit.name.replace("/", "-"), validity_days=days)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ca.cert_pem)
        issued = pki.read_certificate(ca.cert_pem).not_before.timestamp()
        self._note("cert-issued", issued=issued)

    def _note(self, what: str, **facts: Any) -> None:
        _append(self.host, self.unit.name, "notes", {"what": what, "time": clock.time(), **facts})

    # -- actions ------------------------------------------------------------------------------

    def _describe(self, event: ops.ActionEvent) -> None:
        event.log("describing")
        event.set_results(
            {
                "unit": self.unit.name,
                "leader": str(self.unit.is_leader()),
                "verbose": str(event.params["verbose"]),
                "tag": str(event.params.get("tag", "")),
            }
        )

    def _fail(self, event: ops.ActionEvent) -> None:
        event.fail(str(event.params["message"]))

    def _crash(self, _: ops.ActionEvent) -> None:
        raise RuntimeError("crashed on purpose")

    def _touch(self, event: ops.ActionEvent) -> None:
        for relation in self.model.relations["feed"]:
            relation.data[self.unit]["touched"] = "yes"
        event.set_results({"touched": "yes"})

    def _status(self, event: ops.CollectStatusEvent) -> None:
        event.add_status(ops.ActiveStatus(f"recording (v{VERSION})"))


def _append(host: Any, unit: str, kind: str, entry: dict[str, Any]) -> None:
    """One JSON line: to $KAJI_TEST_RECORDER_DIR/events.<kind> (every unit, in the order
    they ran: the tests set it), else to /var/log/recorder/<unit>.<kind> on the machine."""
    shared = os.environ.get("KAJI_TEST_RECORDER_DIR")
    if shared:
        path = Path(shared) / f"events.{kind}"
    else:
        path = host.path(f"/var/log/recorder/{unit.replace('/', '-')}.{kind}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:
        log.write(json.dumps({"unit": unit, **entry}, sort_keys=True) + "\n")


if __name__ == "__main__":  # pragma: nocover
    ops.main(RecorderCharm)

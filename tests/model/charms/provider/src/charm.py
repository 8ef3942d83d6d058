"""Offline-model test charm: app data + a granted app secret to requirers; peers counted."""

from __future__ import annotations

import json
import os
import secrets

import ops

from kaji.app_secrets import app_secret_content
from kaji.host import ServiceSpec, host_from_environment
from kaji.reconciler import ReconcilingCharm


class ProviderCharm(ReconcilingCharm):
    """Leader shares a secret and the member list; every unit publishes its address."""

    def reconcile(self) -> None:
        """Publish data; render the member count; run the (sleeping) daemon."""
        host = host_from_environment()
        address = str(self.model.get_binding("db").network.ingress_address)
        peers = self.model.get_relation("cluster")
        members = sorted({self.unit.name, *(u.name for u in (peers.units if peers else ()))})
        if self.unit.is_leader():
            generation = str(self.config["key-generation"])
            content = app_secret_content(
                self,
                "provider-key",
                lambda: {"key": secrets.token_hex(16), "generation": generation},
            )
            assert content is not None
            secret = self.model.get_secret(label="provider-key")
            if content["generation"] != generation:
                secret.set_content({"key": secrets.token_hex(16), "generation": generation})
            if peers is not None:
                peers.data[self.app]["members"] = json.dumps(members)
            for relation in self.model.relations["db"]:
                secret.grant(relation)
                bag = relation.data[self.app]
                new = {
                    "secret-id": secret.get_info().id,
                    "greeting": str(self.config["greeting"]),
                }
                for key, value in new.items():
                    if bag.get(key) != value:
                        bag[key] = value
        for relation in self.model.relations["db"]:
            bag = relation.data[self.unit]
            if bag.get("address") != address:
                bag["address"] = address
            hostname = os.environ.get("KAJI_HOST_HOSTNAME", "")
            if bag.get("hostname") != hostname:
                bag["hostname"] = hostname
        known = json.loads(peers.data[self.app].get("members", "[]")) if peers else []
        host.write_file("/etc/provider/members", "\n".join(known) + "\n")
        host.write_file("/etc/provider/greeting", f"{self.config['greeting']}\n")
        sleeper = "/bin/sleep"
        host.services.ensure(
            ServiceSpec(
                "provider-daemon",
                [sleeper, "3600"],
                watched_files=[host.path("/etc/provider/greeting")],
            )
        )

    def assess_status(self) -> ops.StatusBase:
        """Active with the number of members the leader announced."""
        peers = self.model.get_relation("cluster")
        known = json.loads(peers.data[self.app].get("members", "[]")) if peers else []
        if not known:
            return ops.WaitingStatus("waiting for the leader")
        return ops.ActiveStatus(f"members: {len(known)}")

    def _on_stop(self, _: ops.StopEvent) -> None:
        host_from_environment().services.stop("provider-daemon")

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        framework.observe(self.on.stop, self._on_stop)


if __name__ == "__main__":  # pragma: nocover
    ops.main(ProviderCharm)

"""Offline-model test charm: a TCP server that greets, listening where config says."""

from __future__ import annotations

import sys

import ops

from kaji.host import HostError, ServiceSpec, host_from_environment

#: Greets every connection with ``hello from <address>``; argv: ADDRESS PORT (or --x=ADDRESS).
SERVER = """
import socket, sys
address, port = (a.split("=")[-1] for a in sys.argv[1:3])
server = socket.create_server((address, int(port)))
while True:
    client, _ = server.accept()
    client.sendall(("hello from " + address + "\\n").encode())
    client.close()
"""


class ListenerCharm(ops.CharmBase):
    """Runs the server; writes its URL into the peer relation."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self._status: ops.StatusBase | None = None
        for event in (
            self.on.install,
            self.on.config_changed,
            self.on.start,
            self.on.update_status,
            self.on.peers_relation_created,
            self.on.peers_relation_changed,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.stop, self._stop)
        framework.observe(self.on.collect_unit_status, self._collect)

    def _reconcile(self, _: ops.EventBase) -> None:
        network = self.model.get_binding("peers").network  # type: ignore[union-attr]
        addresses = {"bind": str(network.bind_address), "ingress": str(network.ingress_address)}
        listen = addresses[str(self.config["listen-on"])]
        advertise = addresses[str(self.config["advertise"])]
        port = str(self.config["port"])
        peers = self.model.get_relation("peers")
        if peers is not None and peers.data[self.unit].get("url") != f"{advertise}:{port}":
            peers.data[self.unit]["url"] = f"{advertise}:{port}"
        where = [f"--listen-address={listen}", f"--port={port}"]
        if not self.config["flags"]:
            where = [listen, port]
        host = host_from_environment()
        try:
            host.services.ensure(ServiceSpec("listener", [sys.executable, "-c", SERVER, *where]))
        except HostError as error:
            self._status = ops.BlockedStatus(str(error))
            return
        self._status = ops.ActiveStatus(f"listening on {listen}:{port}")

    def _stop(self, _: ops.StopEvent) -> None:
        host_from_environment().services.stop("listener")

    def _collect(self, event: ops.CollectStatusEvent) -> None:
        if self._status is not None:
            event.add_status(self._status)


if __name__ == "__main__":  # pragma: nocover
    ops.main(ListenerCharm)

"""A TCP forwarder: a machine's ingress address standing in for NAT in front of its bind address.

    python -m kaji.model.forward LISTEN_HOST TARGET_HOST PORT

Accepts on ``LISTEN_HOST:PORT`` and relays every connection, byte for byte (TLS passes
through), to ``TARGET_HOST:PORT``. The offline model runs one per port a machine's services
listen on at their bind address, so remote units reach them at the ingress address the model
gave the machine, as they would through a cloud's NAT. Runs until killed.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Sequence


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, host: str, port: int) -> None:
    try:
        upstream = socket.create_connection((host, port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: Sequence[str]) -> int:
    """Forward LISTEN_HOST:PORT to TARGET_HOST:PORT forever."""
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    listen_host, target_host, port = argv[0], argv[1], int(argv[2])
    try:
        server = socket.create_server((listen_host, port), backlog=128)
    except OSError as error:
        print(f"cannot listen on {listen_host}:{port}: {error.strerror}", file=sys.stderr)
        return 1
    while True:
        client, _ = server.accept()
        threading.Thread(target=_relay, args=(client, target_host, port), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The etcd charm's code besides its wiring (``src/charm.py``).

``literals`` (names, paths, numbers), ``config`` (EtcdConfig), ``binaries`` (etcd and etcdctl
on the machine), ``member`` (this machine's member: files, service, etcdctl), ``membership``
(the cluster's members: joining, leaving, quorum), ``relations`` (the ``cluster`` and ``db``
relations through kaji.interfaces), ``status`` and ``actions``. The workload modules
(``binaries``, ``member``, ``membership``) import nothing of ops.
"""

from __future__ import annotations

__all__ = ["EtcdError"]


class EtcdError(Exception):
    """etcd or etcdctl did not do what was asked; the message says what and why."""

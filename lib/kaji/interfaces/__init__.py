"""Typed relation data for every kaji relation interface, one module per interface.

Both sides of a relation use the same module: dataclasses per side with ``to_databag()``
and ``from_databag()``, and ``read_*`` functions that return None for an empty databag
("not ready yet") and raise :class:`RelationDataError` for malformed data. Databags are
plain ``Mapping[str, str]``, so the same code serves ops, ops.testing and the offline model.

Modules: :mod:`.etcd` (kaji-etcd), :mod:`.kube_control` (kaji-kube-control), :mod:`.cni`
(kaji-cni), and the peer relations :mod:`.etcd_peers`, :mod:`.control_plane_peers`,
:mod:`.cni_network`. Importing this package does not import ops or cryptography.
"""

from kaji.interfaces._base import (
    JUJU_KEYS,
    MAX_DATABAG_BYTES,
    MAX_PEM_BYTES,
    MAX_VALUE_BYTES,
    Refusal,
    RelationDataError,
    juju_addresses,
    read_or_refuse,
    update_databag,
)

__all__ = [
    "JUJU_KEYS",
    "MAX_DATABAG_BYTES",
    "MAX_PEM_BYTES",
    "MAX_VALUE_BYTES",
    "Refusal",
    "RelationDataError",
    "juju_addresses",
    "read_or_refuse",
    "update_databag",
]

"""kube-control and cni: what the worker reads and publishes, typed through kaji.interfaces.

Malformed data is logged and ignored (``kaji.interfaces.read_or_refuse``): the refusal names the
sender and the key, and :mod:`kaji_worker.status` words the wait from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import ops

from kaji.interfaces import Refusal, RelationDataError, read_or_refuse, update_databag
from kaji.interfaces._base import network
from kaji.interfaces.cni import CniPrincipalUnit, CniUnit, read_cni_unit
from kaji.interfaces.kube_control import (
    KubeControlProviderApp,
    KubeControlRequirerUnit,
    read_provider_app,
    read_provider_unit,
)
from kaji.juju import read_unit_bags

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeControl:
    """What the control plane published on kube-control, and what was refused."""

    #: The control-plane application's name (it issues the node certificate).
    issuer: str
    control_plane: KubeControlProviderApp | None = None
    #: Why the leader's cluster data was refused, if it was.
    cluster_refusal: Refusal | None = None
    #: Every unit's API endpoint, sorted and deduplicated.
    endpoints: tuple[str, ...] = ()
    endpoint_refusals: tuple[Refusal, ...] = ()


@dataclass(frozen=True)
class Cni:
    """What the cni subordinate published (pod network of the service network's IP family)."""

    #: The cni application's name.
    sender: str
    data: CniUnit | None = None
    refusal: Refusal | None = None


def read_kube_control(relation: ops.Relation | None) -> KubeControl | None:
    """The control-plane leader's data and every unit's API endpoint; None: not related."""
    if relation is None or relation.app is None:
        return None
    app = relation.app.name
    cluster = read_or_refuse(
        read_provider_app, relation.data[relation.app], sender=app, what="cluster data", log=logger
    )
    found, refused = read_unit_bags(
        relation,
        relation.units,
        lambda _, bag: read_provider_unit(bag),
        what="API endpoint",
        log=logger,
    )
    endpoints = {data.api_endpoint for _, data in found}
    if isinstance(cluster, Refusal):
        return KubeControl(app, None, cluster, tuple(sorted(endpoints)), tuple(refused))
    return KubeControl(app, cluster, None, tuple(sorted(endpoints)), tuple(refused))


def read_cni(relation: ops.Relation | None, kube: KubeControl | None) -> Cni | None:
    """The first cni unit's valid data; None: not related."""
    if relation is None:
        return None
    control_plane = kube.control_plane if kube is not None else None
    issuer = kube.issuer if kube is not None else "the control plane"

    def read(databag: Mapping[str, str]) -> CniUnit | None:
        cni = read_cni_unit(databag)
        if cni is not None and control_plane is not None:
            pods = network(cni.cluster_cidr)
            services = network(control_plane.service_cidr)
            if pods.version != services.version:
                raise RelationDataError(
                    "cluster-cidr",
                    f"IPv{pods.version}, but {issuer}'s service-cidr"
                    f" {services.compressed} is IPv{services.version}",
                )
        return cni

    found = Cni(relation.app.name if relation.app else "cni")
    for unit in sorted(relation.units, key=lambda u: u.name):
        data = read_or_refuse(
            read, relation.data[unit], sender=unit.name, what="CNI data", log=logger
        )
        if isinstance(data, Refusal):
            found = Cni(found.sender, None, data)
        elif data is not None:
            return Cni(found.sender, data, found.refusal)
    return found


def publish_node(
    relation: ops.Relation | None, unit: ops.Unit, node_name: str, address: str, csr_pem: str
) -> None:
    """The node's name, address and CSR, for the control plane to sign."""
    if relation is not None:
        mine = KubeControlRequirerUnit(node_name, (address,), csr_pem)
        update_databag(relation.data[unit], mine.to_databag())


def publish_principal(
    relation: ops.Relation | None, unit: ops.Unit, kube: KubeControl | None, node_name: str
) -> None:
    """The service network and node name, for the cni subordinate (once the cluster is known)."""
    if relation is not None and kube is not None and kube.control_plane is not None:
        principal = CniPrincipalUnit(kube.control_plane.service_cidr, node_name)
        update_databag(relation.data[unit], principal.to_databag())

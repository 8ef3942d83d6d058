"""Interface ``kaji-cni`` (scope: container): the cni subordinate and its principal.

The principal's endpoint ``cni`` (control-plane or worker) is the provider; the cni
subordinate's endpoint ``cni`` is the requirer, because Juju refuses a subordinate charm without
a container-scoped ``requires`` endpoint. Both sides write unit databags only: with container
scope each side sees exactly its partner on the same machine.

Principal unit databag::

    service-cidr   str   the cluster's service network (CIDR)
    node-name      str   this machine's Kubernetes node name (DNS-1123 subdomain)

cni unit databag::

    cluster-cidr   str   the cluster's pod network (CIDR)
    cni-conf-path  str   absolute path of the CNI configuration directory the plugin writes
    pod-subnet     str   this node's pod subnet (CIDR inside cluster-cidr)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kaji.interfaces._base import (
    Fields,
    RelationDataError,
    check_absolute_path,
    check_cidr,
    check_dns_subdomain,
    check_subnet_of,
    encode,
    network,
)

INTERFACE = "kaji-cni"


@dataclass(frozen=True)
class CniPrincipalUnit:
    """Provider side: what the principal (control-plane or worker) unit tells its cni."""

    service_cidr: str
    node_name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "service_cidr", check_cidr("service-cidr", self.service_cidr))
        check_dns_subdomain("node-name", self.node_name)

    def to_databag(self) -> dict[str, str]:
        """Encode for the principal unit's own databag."""
        return encode({"service-cidr": self.service_cidr, "node-name": self.node_name})

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> CniPrincipalUnit:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag)
        return cls(
            service_cidr=fields.string("service-cidr"), node_name=fields.string("node-name")
        )


def read_principal_unit(
    databag: Mapping[str, str], *, cluster_cidr: str | None = None
) -> CniPrincipalUnit | None:
    """Requirer (cni) side: the principal's data, or None while it has written nothing.

    Args:
        databag: the principal unit's databag.
        cluster_cidr: when given (the pod network cni is configured with), ``service-cidr``
            must be of the same IP family: a service network of the other family would get
            rules and routes of the pod network's family.

    Raises:
        RelationDataError: malformed data, or a service CIDR of another IP family.
    """
    if not Fields(databag):
        return None
    data = CniPrincipalUnit.from_databag(databag)
    if cluster_cidr is not None:
        pods = network(check_cidr("cluster-cidr", cluster_cidr))
        if network(data.service_cidr).version != pods.version:
            raise RelationDataError(
                "service-cidr",
                f"{data.service_cidr} is not of the pod network's IP family"
                f" (IPv{pods.version}: {pods.compressed})",
            )
    return data


@dataclass(frozen=True)
class CniUnit:
    """Requirer side: what the cni subordinate unit tells its principal."""

    cluster_cidr: str
    cni_conf_path: str
    pod_subnet: str

    def __post_init__(self) -> None:
        cluster_cidr = check_cidr("cluster-cidr", self.cluster_cidr)
        check_absolute_path("cni-conf-path", self.cni_conf_path)
        pod_subnet = check_subnet_of("pod-subnet", self.pod_subnet, cluster_cidr)
        object.__setattr__(self, "cluster_cidr", cluster_cidr)
        object.__setattr__(self, "pod_subnet", pod_subnet)

    def to_databag(self) -> dict[str, str]:
        """Encode for the cni unit's own databag."""
        return encode(
            {
                "cluster-cidr": self.cluster_cidr,
                "cni-conf-path": self.cni_conf_path,
                "pod-subnet": self.pod_subnet,
            }
        )

    @classmethod
    def from_databag(cls, databag: Mapping[str, str]) -> CniUnit:
        """Decode and validate.

        Raises:
            RelationDataError: anything missing or malformed, including an empty databag.
        """
        fields = Fields(databag)
        return cls(
            cluster_cidr=fields.string("cluster-cidr"),
            cni_conf_path=fields.string("cni-conf-path"),
            pod_subnet=fields.string("pod-subnet"),
        )


def read_cni_unit(databag: Mapping[str, str]) -> CniUnit | None:
    """Provider (principal) side: the cni subordinate's data, or None while it wrote nothing."""
    if not Fields(databag):
        return None
    return CniUnit.from_databag(databag)

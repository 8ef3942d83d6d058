"""The control plane's actions: each reads only, or does its own job and nothing else."""

from __future__ import annotations

from collections.abc import Mapping

import ops

from kaji import kubernetes as k8s
from kaji.config import ConfigError
from kaji.host import Host

from . import binaries, files, relations, services
from .config import ControlPlaneConfig


def get_kubeconfig(
    event: ops.ActionEvent,
    host: Host,
    options: Mapping[str, object],
    address: str | None,
) -> None:
    """An admin kubeconfig; reads only (no file, relation or secret is written).

    The server is the ``loadbalancer-address`` when set, else the unit's public address
    when Juju reports one, else its own address: each is in the API certificate.
    """
    try:
        settings = ControlPlaneConfig.from_options(options)
    except ConfigError as exc:
        event.fail(f"invalid config: {exc}")
        return
    endpoint = settings.loadbalancer_address or relations.public_address(host) or address
    if endpoint is None:
        event.fail("this unit has no address yet")
        return
    try:
        kubeconfig = files.admin_kubeconfig(host, k8s.api_url(endpoint))
    except FileNotFoundError as exc:
        event.fail(str(exc))
        return
    event.set_results({"kubeconfig": kubeconfig})


def restart(event: ops.ActionEvent, host: Host) -> None:
    """Restart the three services as they are set up; nothing else changes."""
    if host.is_sandbox:
        binaries.locate_binaries(host)
    restarted = services.restart_recorded_services(host)
    if not restarted:
        event.fail("no control-plane service is set up on this unit yet")
        return
    event.set_results({"restarted": ",".join(restarted)})

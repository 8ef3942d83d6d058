"""Cluster setup by the leader: RBAC bindings and CoreDNS, and deleting departed workers' Nodes.

No ops here: the leader applies the rendered manifests server-side with kubectl as the admin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import jinja2

from kaji import kubernetes as k8s
from kaji.host import CommandTimeoutError

from .literals import (
    APPLIED_DIGEST_FILE,
    FIELD_MANAGER,
    KUBE_DIR,
    MANIFEST_DIR,
    STATE_DIR,
    TEMPLATES,
)

if TYPE_CHECKING:
    from kaji.host import CommandResult, Host

    from .config import ControlPlaneConfig

logger = logging.getLogger(__name__)


def render_manifests(settings: ControlPlaneConfig) -> dict[str, str]:
    """The cluster-setup manifests by file name: RBAC bindings and CoreDNS."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML
    )
    values = {
        "dns_address": settings.dns_address,
        "dns_domain": settings.dns_domain,
        "coredns_image": k8s.coredns_image(settings.image_registry, settings.version),
        "service_cidr": settings.service_cidr,
    }
    return {
        name: env.get_template(f"{name}.j2").render(**values)
        for name in ("rbac.yaml", "coredns.yaml")
    }


def write_manifests(host: Host, manifests: Mapping[str, str]) -> list[str]:
    """Write the manifests under ``/etc/kubernetes/manifests``; return their machine paths."""
    host.ensure_directory(MANIFEST_DIR, 0o755)
    paths = []
    for name, text in sorted(manifests.items()):
        path = f"{MANIFEST_DIR}/{name}"
        host.write_file(path, text, mode=0o644)
        paths.append(path)
    return paths


def manifests_digest(manifests: Mapping[str, str]) -> str:
    """A digest of the manifests, to apply them only when they change."""
    return hashlib.sha256(json.dumps(dict(sorted(manifests.items()))).encode()).hexdigest()


def applied_digest(host: Host) -> str | None:
    """The digest of the manifests last applied on this unit, if any."""
    text = host.read_text(APPLIED_DIGEST_FILE)
    return text.strip() if text else None


def _kubectl(host: Host, kubectl: str) -> list[str]:
    """The kubectl command line as the cluster admin (this unit's kubeconfig), with a timeout."""
    kubeconfig = str(host.path(f"{KUBE_DIR}/admin.conf"))
    return [kubectl, "--kubeconfig", kubeconfig, "--request-timeout=10s"]


def _failure(result: CommandResult) -> str:
    """The first line of a failed command's error output, short enough for a status."""
    text = (result.stderr or result.stdout or "").strip()
    line = text.splitlines()[-1] if text else f"exit status {result.returncode}"
    return line[:160]


def api_ready(host: Host, kubectl: str) -> str | None:
    """None when the API answers ``/readyz`` as the admin, else why not (short)."""
    try:
        probe = host.run([*_kubectl(host, kubectl), "get", "--raw", "/readyz"], check=False)
    except CommandTimeoutError:
        return "API not ready: /readyz timed out"
    return None if probe.ok else f"API not ready: {_failure(probe)}"


def apply_manifests(
    host: Host, kubectl: str, paths: Iterable[str], digest: str, timeout: float = 60
) -> str | None:
    """Apply the manifests server-side as the admin; None when applied, else why not.

    ``kubectl apply --server-side --force-conflicts --field-manager=kaji-control-plane`` is
    idempotent: applying the same manifests again changes nothing, and fields kaji owns are
    taken back from whoever changed them. The digest of what was applied is recorded so an
    unchanged set is not applied again.
    """
    if (reason := api_ready(host, kubectl)) is not None:
        return reason
    argv = [
        *_kubectl(host, kubectl),
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
    ]
    for path in paths:
        argv += ["-f", str(host.path(path))]
    try:
        result = host.run(argv, check=False, timeout=timeout)
    except CommandTimeoutError:
        return f"kubectl apply timed out after {timeout:g}s"
    if not result.ok:
        logger.warning("kubectl apply failed: %s", result.stderr[-500:])
        return f"kubectl apply failed: {_failure(result)}"
    host.ensure_directory(STATE_DIR, 0o755)
    host.write_file(APPLIED_DIGEST_FILE, digest + "\n", mode=0o644)
    return None


def delete_nodes(host: Host, kubectl: str, names: Iterable[str]) -> dict[str, str]:
    """Delete these Node objects as the admin; return the ones not deleted, with why.

    ``--ignore-not-found`` makes it idempotent: a Node already gone counts as deleted.
    """
    names = sorted(names)
    if not names:
        return {}
    if (reason := api_ready(host, kubectl)) is not None:
        return dict.fromkeys(names, reason)
    left: dict[str, str] = {}
    for name in names:
        argv = [*_kubectl(host, kubectl), "delete", "node", name, "--ignore-not-found"]
        try:
            result = host.run(argv, check=False, timeout=30)
        except CommandTimeoutError:
            left[name] = "kubectl delete node timed out"
            continue
        if result.ok:
            logger.info("deleted the Node %s of a departed worker", name)
        else:
            left[name] = f"kubectl delete node failed: {_failure(result)}"
    return left


@dataclasses.dataclass(frozen=True)
class SetupOutcome:
    """What cluster setup left to do: the status's wait (None: nothing), Nodes not deleted."""

    pending: str | None
    departed_left: tuple[str, ...]


def set_up_cluster(
    host: Host,
    settings: ControlPlaneConfig,
    kubectl: str,
    *,
    leader: bool,
    departed: tuple[str, ...],
) -> SetupOutcome:
    """Render the manifests; the leader applies them and deletes departed workers' Nodes.

    Where the services are only recorded (a sandbox), nothing serves the API: the leader
    records the setup and the deletions as done, and the status says it is recorded only.
    """
    manifests = render_manifests(settings)
    paths = write_manifests(host, manifests)
    if not leader:
        return SetupOutcome(None, departed)
    recorded = not host.services.runs_processes
    pending: list[str] = []
    reasons: list[str] = []
    digest = manifests_digest(manifests)
    if applied_digest(host) != digest and not recorded:
        reason = apply_manifests(host, kubectl, paths, digest)
        if reason is not None:
            pending.append("apply the RBAC bindings and CoreDNS")
            reasons.append(reason)
    left: dict[str, str] = {}
    if departed:
        if recorded:
            logger.info("recorded only (sandbox): deleting Nodes %s", ", ".join(departed))
        else:
            left = delete_nodes(host, kubectl, departed)
        if left:
            pending.append(
                f"delete the Node{'s' if len(left) > 1 else ''} of departed "
                f"workers: {', '.join(sorted(left))}"
            )
            reasons += [r for r in left.values() if r not in reasons]
    message = f"waiting for the API to {' and '.join(pending)} ({reasons[0]})" if pending else None
    return SetupOutcome(message, tuple(sorted(left)))

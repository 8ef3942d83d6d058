"""The whole node: install the runtime, take the node identity, run kubelet and kube-proxy.

``Node.reconcile`` is the one entry point the charm calls on every event, with everything the
model knows as plain data; it returns an ``Outcome`` the charm turns into the unit status.
``Node.teardown`` undoes the install when the unit goes away.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import kaji.host
from kaji import kubernetes
from kaji.host import (
    BinaryInstallError,
    CommandError,
    CountingServiceManager,
    ProxySettings,
    RecordingManager,
    ServiceSpec,
)
from kaji.interfaces.kube_control import expected_node_identity
from kaji.kernel import ensure_kernel_settings, remove_kernel_settings
from kaji.lazy import lazy_import
from kaji.packages import ensure_packages, purge_packages
from kaji_worker import apilb, containerd, kube
from kaji_worker.literals import (
    CONTAINERD_RESOURCE_FILES,
    DEFAULT_CNI_CONF_DIR,
    KERNEL_SETTINGS,
    KUBE_BINARIES,
    LB_PACKAGES,
    PACKAGED,
    PACKAGED_CNI_DIR,
    RECONCILED_FILE,
    RECORDED_STATE,
    RUNTIME_PACKAGES,
    STATE_FILE,
)

if TYPE_CHECKING:
    from kaji import certs, pki
    from kaji.certs import KeyAndRequest
    from kaji.host import Host
    from kaji.interfaces.cni import CniUnit
    from kaji.interfaces.kube_control import KubeControlProviderApp
    from kaji_worker.config import WorkerConfig
else:
    certs = lazy_import("kaji.certs")
    pki = lazy_import("kaji.pki")

#: Every file the charm writes outside /opt/kaji (removed on teardown).
WRITTEN_FILES = (
    containerd.CONFIG,
    containerd.DROP_IN,
    apilb.CONFIG,
    kube.CA_CERT,
    kube.NODE_CERT,
    kube.NODE_KEY,
    f"{kube.PKI_DIR}/{kube.NODE_NAME}.csr",
    kube.KUBELET_KUBECONFIG,
    kube.KUBELET_CONFIG,
    kube.PROXY_KUBECONFIG,
    kube.PROXY_CONFIG,
    STATE_FILE,
    RECONCILED_FILE,
)
SERVICES_IN_STOP_ORDER = (kube.KUBE_PROXY, kube.KUBELET, apilb.SERVICE, containerd.SERVICE)


class NodeError(Exception):
    """Something the operator must fix (a bad resource, a failed download): blocks the unit."""


@dataclass(frozen=True)
class Outcome:
    """How the node is doing after a reconcile, for the unit status."""

    state: Literal["active", "waiting", "blocked", "maintenance"]
    message: str
    #: Services only recorded (their binary is not on this sandboxed machine).
    recorded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resources:
    """Local paths of the attached resources (None: not attached or empty)."""

    containerd: str | None = None
    kubernetes_node: str | None = None


@dataclass(frozen=True)
class _Binaries:
    runtime: containerd.ContainerdBinaries
    #: False in a sandbox that lacks them (or cannot run them): containerd is only recorded.
    runnable: bool = True


@dataclass(frozen=True)
class Waits:
    """What the unit says while it waits on data (the charm names the sender and the key)."""

    cluster: str = "waiting for cluster data from the control plane"
    endpoint: str = "waiting for an API endpoint from the control plane"
    cni: str = "waiting for CNI"
    #: Who issues the node certificate (the control-plane application's name).
    issuer: str = "the control plane"


class Node:
    """One worker machine, as the charm sees it."""

    def __init__(
        self,
        host: Host,
        *,
        which: Callable[[str], str | None] = shutil.which,
        fetch: Callable[[str], str] | None = None,
        arch: str | None = None,
    ) -> None:
        self.host = host
        self.which = which
        #: GETs a checksum file; None: ``kaji.host.fetch_text`` through ``self.proxies``.
        self.fetch = fetch
        #: The model's proxies, for downloads and containerd's image pulls.
        self.proxies = ProxySettings()
        self.arch = arch or kubernetes.machine_arch()
        self._recorder: CountingServiceManager | None = None
        #: name -> whether it runs for real, for every service the last reconcile ensured.
        self._ensured: dict[str, bool] = {}
        #: When the outcome must be recomputed even if nothing else happens (cert expiry).
        self._recheck_after: float | None = None

    # -- services ----------------------------------------------------------------------------

    @property
    def recorder(self) -> CountingServiceManager:
        """Where services whose binary this sandbox lacks are recorded (never run)."""
        if self._recorder is None:
            manager = RecordingManager(self.host.path(RECORDED_STATE))
            self._recorder = CountingServiceManager(manager, self.host.stats)
        return self._recorder

    def _can_run(self, binary: str | None) -> bool:
        if not self.host.is_sandbox:
            return True
        return binary is not None and os.geteuid() == 0 and os.access(binary, os.X_OK)

    def _manager(self, runnable: bool) -> CountingServiceManager:
        return self.host.services if runnable else self.recorder

    def _ensure(self, spec: ServiceSpec, runnable: bool, recorded: list[str]) -> bool:
        manager = self._manager(runnable)
        other = self.recorder if runnable else self.host.services
        if other.get(spec.name) is not None:  # moved between real and recorded
            other.remove(spec.name)
        if not manager.runs_processes:
            recorded.append(spec.name)
        self._ensured[spec.name] = runnable
        return manager.ensure(spec).changed

    def _remove(self, name: str) -> bool:
        removed = False
        for manager in (self.host.services, self.recorder):
            if manager.get(name) is not None or manager.is_running(name):
                removed |= manager.remove(name)
        return removed

    # -- update-status's cheap path -----------------------------------------------------------

    @property
    def ensured(self) -> dict[str, bool]:
        """Every service the last reconcile ensured: name -> whether it runs for real."""
        return dict(sorted(self._ensured.items()))

    @property
    def recheck_after(self) -> int | None:
        """When (epoch seconds) the outcome must be recomputed anyway (certificate renewal)."""
        return None if self._recheck_after is None else int(self._recheck_after)

    def still_running(self, services: Mapping[str, bool]) -> bool:
        """Whether every service of ``services`` (name -> runs for real) still runs."""
        return all(self._manager(bool(real)).is_running(name) for name, real in services.items())

    # -- state -------------------------------------------------------------------------------

    def _state(self) -> dict[str, list[str]]:
        text = self.host.read_text(STATE_FILE)
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def _note_packages(self, installed: Sequence[str]) -> None:
        if not installed:
            return
        state = self._state()
        state["packages"] = sorted({*state.get("packages", []), *installed})
        self.host.write_file(STATE_FILE, json.dumps(state, sort_keys=True) + "\n", mode=0o600)

    # -- install -----------------------------------------------------------------------------

    def _packages(self, names: Sequence[str]) -> None:
        try:
            self._note_packages(ensure_packages(self.host, names))
        except CommandError as exc:
            raise NodeError(f"installing {', '.join(names)} failed: {exc}") from exc

    def install_runtime(self, resource: str | None) -> _Binaries:
        """containerd, runc and the CNI plugins: resource, distribution packages, or PATH."""
        if resource is not None:
            try:
                result = kaji.host.install_binaries(
                    self.host,
                    "containerd",
                    "resource",
                    files=CONTAINERD_RESOURCE_FILES,
                    source=resource,
                )
            except BinaryInstallError as exc:
                raise NodeError(f"containerd resource: {exc}") from exc
            bin_dir = result.directory / "bin"
            return _Binaries(
                containerd.ContainerdBinaries(
                    containerd=str(bin_dir / "containerd"),
                    runc=str(bin_dir / "runc"),
                    cni_bin_dir=str(result.directory / "cni"),
                    path_dirs=(str(bin_dir),),
                )
            )
        if not self.host.is_sandbox:
            self._packages(RUNTIME_PACKAGES)
            return _Binaries(
                containerd.ContainerdBinaries(
                    PACKAGED["containerd"], PACKAGED["runc"], PACKAGED_CNI_DIR
                )
            )
        found = {name: self.which(name) for name in ("containerd", "runc")}
        binaries = containerd.ContainerdBinaries(
            containerd=found["containerd"] or PACKAGED["containerd"],
            runc=found["runc"] or PACKAGED["runc"],
            cni_bin_dir=PACKAGED_CNI_DIR,
        )
        runnable = self._can_run(found["containerd"]) and found["runc"] is not None
        return _Binaries(binaries, runnable)

    def install_kube(
        self, version: kubernetes.KubernetesVersion, options: WorkerConfig, resource: str | None
    ) -> tuple[dict[str, str], bool]:
        """Install kubelet and kube-proxy for ``version``; return their paths and if they run.

        A resource (the upstream ``kubernetes-node-linux-<arch>.tar.gz``) wins; else, on a
        real machine, the upstream release, checked against its published SHA-256 (or the
        ``kubernetes-node-sha256`` option); in a sandbox, whatever is on PATH.
        """
        if resource is None and self.host.is_sandbox:
            found = {name: self.which(name) for name in KUBE_BINARIES}
            directory = self.host.path(f"/opt/kaji/kubernetes-node/{version}")
            paths = {name: found[name] or str(directory / name) for name in KUBE_BINARIES}
            return paths, all(found.values())
        try:
            if resource is not None:
                result = kaji.host.install_binaries(
                    self.host,
                    "kubernetes-node",
                    str(version),
                    files=KUBE_BINARIES,
                    source=resource,
                    strip_components=kubernetes.TARBALL_STRIP_COMPONENTS,
                )
            else:
                url = kubernetes.node_tarball_url(version, self.arch, options.release_mirror)
                sha = options.kubernetes_node_sha256
                if sha is None:
                    sha = self._published_sha256(kubernetes.checksum_url(url))
                result = kaji.host.install_binaries(
                    self.host,
                    "kubernetes-node",
                    str(version),
                    files=KUBE_BINARIES,
                    url=url,
                    sha256=sha,
                    strip_components=kubernetes.TARBALL_STRIP_COMPONENTS,
                    timeout=120,
                    proxies=self.proxies,
                )
        except BinaryInstallError as exc:
            raise NodeError(f"kubelet and kube-proxy {version}: {exc}") from exc
        return {name: str(result.directory / name) for name in KUBE_BINARIES}, True

    def _published_sha256(self, url: str) -> str:
        """The SHA-256 in the ``.sha256`` file at ``url``.

        Raises:
            NodeError: it cannot be fetched or holds no checksum.
        """
        try:
            if self.fetch is not None:
                text = self.fetch(url)
            else:
                text = kaji.host.fetch_text(url, limit=4096, proxies=self.proxies)
            return kubernetes.parse_sha256_file(text)
        except ValueError as exc:
            raise NodeError(f"{url}: {exc}") from exc

    def _haproxy(self) -> tuple[str, bool]:
        if not self.host.is_sandbox:
            self._packages(LB_PACKAGES)
            return PACKAGED["haproxy"], True
        found = self.which("haproxy")
        return found or PACKAGED["haproxy"], self._can_run(found)

    # -- identity ----------------------------------------------------------------------------

    def ensure_identity(self, node_name: str, addresses: Sequence[str]) -> KeyAndRequest:
        """The node's key (made here, kept) and its CSR for ``system:node:<node_name>``."""
        identity = expected_node_identity(node_name, addresses)
        return certs.ensure_key_and_csr(self.host, kube.PKI_DIR, kube.NODE_NAME, identity)

    # -- the node ----------------------------------------------------------------------------

    def reconcile(
        self,
        options: WorkerConfig,
        *,
        unit_name: str,
        node_name: str,
        address: str,
        request: KeyAndRequest,
        control_plane: KubeControlProviderApp | None,
        endpoints: Sequence[str],
        cni: CniUnit | None,
        resources: Resources,
        proxies: ProxySettings | None = None,
        waits: Waits | None = None,
    ) -> Outcome:
        """Make the machine a node as far as the data allows; say what it waits for.

        ``proxies`` (the model's) are used for downloads and handed to containerd for image
        pulls; ``waits`` words the waiting statuses (who has not sent what).

        Raises:
            NodeError: an install failed in a way the operator must look at.
        """
        self.proxies = proxies or ProxySettings()
        waits = waits or Waits()

        ensure_kernel_settings(self.host, KERNEL_SETTINGS)
        binaries = self.install_runtime(resources.containerd)
        recorded: list[str] = []
        registry = control_plane.image_registry if control_plane else None
        registry = registry or kubernetes.DEFAULT_IMAGE_REGISTRY
        driver = containerd.cgroup_driver(self.host)
        config = containerd.render_config(
            self.host,
            binaries=binaries.runtime,
            sandbox_image=kubernetes.pause_image(registry),
            cgroup_driver=driver,
            cni_conf_dir=cni.cni_conf_path if cni else DEFAULT_CNI_CONF_DIR,
        )
        self.host.write_file(containerd.CONFIG, config)
        self.host.write_file(containerd.DROP_IN, containerd.DROP_IN_TEXT)
        containerd.ensure_mirrors(self.host, options.registry_mirrors)
        runtime_spec = containerd.service_spec(
            self.host, binaries.runtime, proxy_environment=self.proxies.environment()
        )
        self._ensure(runtime_spec, binaries.runnable, recorded)
        runtime_ok = binaries.runnable

        if control_plane is None:
            return Outcome("waiting", waits.cluster, (*recorded,))
        if not endpoints and options.loadbalancer_url is None:
            return Outcome("waiting", waits.endpoint, (*recorded,))
        cert = control_plane.certificate_for(unit_name)
        if not certs.usable_certificate(cert, request, control_plane.ca_cert, pki.Profile.PEER):
            message = "waiting for the node certificate"
            if cert:
                message += (
                    f" (the one {waits.issuer} published for {unit_name} does not match this"
                    " node's request)"
                )
            return Outcome("waiting", message, (*recorded,))
        assert cert is not None
        self.host.write_file(kube.CA_CERT, control_plane.ca_cert)
        self.host.write_file(kube.NODE_CERT, cert)

        version = kubernetes.check_version(control_plane.kubernetes_version)
        paths, kube_runnable = self.install_kube(version, options, resources.kubernetes_node)
        kube_runnable = kube_runnable and self._can_run(paths[kube.KUBELET]) and runtime_ok
        server, tls_name = self._api_server(options, endpoints, recorded)

        def kubeconfig(path: str) -> None:
            self.host.write_file(
                path,
                kube.render_kubeconfig(
                    server=server,
                    ca_cert_pem=control_plane.ca_cert,
                    cert_pem=cert,
                    key_pem=request.key_pem,
                    user=f"system:node:{node_name}",
                    tls_server_name=tls_name,
                ),
                mode=0o600,
            )

        kubeconfig(kube.KUBELET_KUBECONFIG)
        socket = self.host.path(containerd.SOCKET)
        self.host.write_file(
            kube.KUBELET_CONFIG,
            kube.kubelet_config(
                self.host,
                cluster_dns=control_plane.dns_address,
                cluster_domain=control_plane.dns_domain,
                cgroup_driver=driver,
                runtime_endpoint=f"unix://{socket}",
                taints=options.node_taints,
                extra=options.kubelet_extra_config,
            ),
        )
        kubelet = kube.kubelet_spec(
            self.host,
            paths[kube.KUBELET],
            node_name=node_name,
            node_ip=address,
            labels=options.node_labels,
        )
        self._ensure(kubelet, kube_runnable, recorded)

        if cni is None:
            return Outcome(
                "waiting", f"node {node_name}: {waits.cni}", tuple(sorted(set(recorded)))
            )
        kubeconfig(kube.PROXY_KUBECONFIG)
        self.host.write_file(
            kube.PROXY_CONFIG,
            kube.kube_proxy_config(
                self.host,
                node_name=node_name,
                cluster_cidr=cni.cluster_cidr,
                mode=options.proxy_mode,
                extra=options.proxy_extra_config,
            ),
        )
        proxy = kube.kube_proxy_spec(self.host, paths[kube.KUBE_PROXY])
        self._ensure(proxy, kube_runnable and self._can_run(paths[kube.KUBE_PROXY]), recorded)
        message = f"node {node_name}"
        not_after = pki.read_certificate(cert).not_after
        self._recheck_after = (not_after - timedelta(days=30)).timestamp()
        if pki.expires_within(cert, 30):
            expiry = pki.read_certificate(cert).not_after.date().isoformat()
            message += f" (node certificate expires {expiry})"
        return Outcome("active", message, tuple(sorted(set(recorded))))

    def _api_server(
        self, options: WorkerConfig, endpoints: Sequence[str], recorded: list[str]
    ) -> tuple[str, str | None]:
        """The URL kubelet and kube-proxy use, and the TLS name to verify (balancer only).

        A configured load balancer or a single endpoint is used directly; several endpoints
        go through the local haproxy, which is reloaded (never restarted) when they change.
        """
        if options.loadbalancer_url is not None or len(set(endpoints)) == 1:
            if self._remove(apilb.SERVICE):
                self.host.remove_file(apilb.CONFIG)
            return options.loadbalancer_url or endpoints[0], None
        haproxy, runnable = self._haproxy()
        changed = self.host.write_file(
            apilb.CONFIG, apilb.render_config(self.host.loopback_address, endpoints)
        )
        spec = apilb.service_spec(self.host, haproxy)
        manager = self._manager(runnable)
        if (
            not self._ensure(spec, runnable, recorded)
            and changed
            and manager.is_running(spec.name)
        ):
            manager.reload(spec.name)
        return apilb.frontend_url(self.host), apilb.TLS_SERVER_NAME

    # -- leaving -----------------------------------------------------------------------------

    def _kill_pods(self) -> None:
        """Kill the pods' containers: they outlive containerd (its unit has KillMode=process).

        Best effort, real machines only: a container that will not die is logged by ctr and
        left to the machine's removal.
        """
        if self.host.is_sandbox or self.which("ctr") is None:
            return
        ctr = ["ctr", "--address", str(self.host.path(containerd.SOCKET)), "--namespace"]
        listing = self.host.run([*ctr, "k8s.io", "tasks", "list", "-q"], check=False)
        for task in listing.stdout.split() if listing.ok else []:
            self.host.run([*ctr, "k8s.io", "tasks", "kill", "-s", "SIGKILL", task], check=False)

    def teardown(self) -> None:
        """Stop every service and remove what the charm installed and wrote."""
        for name in SERVICES_IN_STOP_ORDER:
            if name == containerd.SERVICE:
                self._kill_pods()
            self._remove(name)
        packages = self._state().get("packages", [])
        for path in WRITTEN_FILES:
            self.host.remove_file(path)
        base = self.host.path(containerd.HOSTS_DIR)
        if base.is_dir():
            for hosts in sorted(base.glob("*/hosts.toml")):
                text = hosts.read_text()
                if text.startswith(containerd.HEADER):
                    self.host.remove_file(self.host.machine_path(hosts))
        remove_kernel_settings(self.host, KERNEL_SETTINGS)
        for name in ("kubernetes-node", "containerd"):
            directory = self.host.path(f"/opt/kaji/{name}")
            if directory.exists():
                shutil.rmtree(directory)
        if packages and not self.host.is_sandbox:
            purge_packages(self.host, packages)

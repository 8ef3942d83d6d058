"""The real bundle in the offline model: the four real charms converge together.

Services are recorded (no processes) except in the one test that proves real etcd runs.
The charms run from source: the bundle is copied where the packed charms it names are absent.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from kaji.model.engine import Model
from kaji.model.status import format_status, machine_services
from kaji.pki import verify_chain

from .conftest import ROOT, rendered_files, source_bundle

BUNDLE = ROOT / "bundles" / "k8s.yaml"
HA = ROOT / "bundles" / "overlays" / "ha.yaml"
CHARMS = ROOT / "charms"
PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----\n.*?-----END \1-----\n?", re.S)


def deploy(directory: Path, *, overlays: tuple[Path, ...] = (), **kwargs: object) -> Model:
    bundle = source_bundle(directory.parent / "bundle", BUNDLE)
    model = Model.create(directory, **kwargs)  # type: ignore[arg-type]
    model.deploy(bundle, overlays, CHARMS)
    return model


def statuses(model: Model) -> dict[str, str]:
    return {
        n: f"error: {u.error}" if u.error else f"{u.status[0]}: {u.status[1]}"
        for n, u in sorted(model.world.units.items())
    }


def assert_all_active(model: Model) -> None:
    bad = {n: s for n, s in statuses(model).items() if not s.startswith("active")}
    assert not bad, f"units not active: {json.dumps(bad, indent=1)}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    """The default bundle, deployed once for the read-only tests."""
    model = deploy(tmp_path_factory.mktemp("k8s") / "model")
    yield model
    model.destroy()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Model]:
    model = deploy(tmp_path / "model")
    yield model
    model.destroy()


# -- helpers reading the cluster ---------------------------------------------------------------


def units(model: Model, app: str) -> list[str]:
    return [u.name for u in model.units_of(app)]


def read(model: Model, unit: str, path: str) -> bytes:
    return (model.unit_root(unit) / path.lstrip("/")).read_bytes()


def kube_control(model: Model) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    rel = model.relation_between("control-plane", "worker")
    assert rel is not None
    return rel.app_data.get("control-plane", {}), rel.unit_data


def api_endpoints(model: Model) -> set[str]:
    """host:port of every control-plane unit's published API endpoint."""
    _, bags = kube_control(model)
    found = set()
    for unit in units(model, "control-plane"):
        url = json.loads(bags[unit]["api-endpoint"])
        found.add(url.removeprefix("https://"))
    return found


def cluster_ca(model: Model) -> str:
    app, _ = kube_control(model)
    return str(json.loads(app["ca-cert"]))


def kubeconfigs(model: Model, worker: str) -> dict[str, dict]:
    root = model.unit_root(worker) / "etc/kubernetes"
    found = {}
    for path in sorted(root.glob("*.conf")):
        text = path.read_text()
        if "clusters" in text:
            found[path.name] = json.loads(text) if text.lstrip().startswith("{") else None
    return found


def endpoints_seen_by(model: Model, worker: str) -> set[str]:
    """Every API host:port a worker's kubeconfigs reach, directly or through its balancer."""
    seen: set[str] = set()
    for name, config in kubeconfigs(model, worker).items():
        assert config is not None, f"{name} is not JSON"
        for cluster in config["clusters"]:
            seen.add(cluster["cluster"]["server"].removeprefix("https://"))
    balancer = model.unit_root(worker) / "etc/kaji/apiserver-lb.cfg"
    if balancer.exists():
        seen |= set(re.findall(r"^\s*server \S+ (\S+:\d+)", balancer.read_text(), re.M))
    return seen


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode(), m.group(0)) for m in PEM.finditer(data)]


# -- the default bundle ------------------------------------------------------------------------


def test_every_unit_ends_active(cluster: Model) -> None:
    assert_all_active(cluster)
    assert cluster.pending() == 0
    assert len(units(cluster, "cni")) == 3  # one per control-plane and worker machine


def test_no_relation_databag_holds_a_private_key(cluster: Model) -> None:
    for rel in cluster.world.relations.values():
        for owner, bag in [*rel.app_data.items(), *rel.unit_data.items()]:
            for key, value in bag.items():
                assert "PRIVATE KEY" not in value, f"{rel} {owner} {key}"


def test_worker_kubeconfigs_name_every_endpoint_and_chain_to_the_cluster_ca(
    cluster: Model,
) -> None:
    ca = cluster_ca(cluster)
    expected = api_endpoints(cluster)
    for worker in units(cluster, "worker"):
        machine = cluster.world.machines[cluster.world.units[worker].machine]
        assert expected <= endpoints_seen_by(cluster, worker)
        configs = kubeconfigs(cluster, worker)
        assert "kubelet.conf" in configs
        for name, config in configs.items():
            assert config is not None
            (cluster_entry,) = config["clusters"]
            ca_data = base64.b64decode(cluster_entry["cluster"]["certificate-authority-data"])
            assert ca_data.decode().strip() == ca.strip(), name
            (user,) = config["users"]
            cert_pem = base64.b64decode(user["user"]["client-certificate-data"]).decode()
            verify_chain(cert_pem, ca)
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            if name == "kubelet.conf":
                cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
                orgs = [
                    a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
                ]
                assert cn == f"system:node:{machine.hostname}"
                assert orgs == ["system:nodes"]


def _etcd_servers(model: Model, unit: str) -> set[str]:
    root = model.unit_root(unit)
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        match = re.search(r"etcd-servers[\"']?[=:]\s*[\"']?([^\s\"']+)", path.read_text("latin-1"))
        if match:
            return set(match.group(1).split(","))
    raise AssertionError(f"no --etcd-servers anywhere on {unit}'s machine")


def _etcd_members(model: Model) -> set[str]:
    return {
        f"https://{model.world.machines[model.world.units[u].machine].address}:2379"
        for u in units(model, "etcd")
    }


def test_apiserver_etcd_servers_are_the_etcd_members(cluster: Model) -> None:
    rel = cluster.relation_between("etcd", "control-plane")
    assert rel is not None
    published = set(json.loads(rel.app_data["etcd"]["client-urls"]))
    assert published == _etcd_members(cluster)
    for cp in units(cluster, "control-plane"):
        assert _etcd_servers(cluster, cp) == published


def test_cni_pod_subnets_are_disjoint_and_cover_every_node(cluster: Model) -> None:
    rel = cluster.peer_relation("cni")
    assert rel is not None
    allocations = json.loads(rel.app_data["cni"]["allocations"])
    assert set(allocations) == set(units(cluster, "cni"))
    networks = [ipaddress.ip_network(c) for c in allocations.values()]
    cluster_cidr = ipaddress.ip_network(json.loads(rel.app_data["cni"]["cluster-cidr"]))
    for i, a in enumerate(networks):
        assert a.subnet_of(cluster_cidr)  # type: ignore[arg-type]
        for b in networks[i + 1 :]:
            assert not a.overlaps(b)


def test_unit_get_public_address_reaches_the_api_certificate_and_get_kubeconfig(
    cluster: Model,
) -> None:
    unit = cluster.world.units["control-plane/0"]
    machine = cluster.world.machines[unit.machine]
    assert machine.public not in ("", machine.address, machine.bind)
    cert = x509.load_pem_x509_certificate(
        read(cluster, unit.name, "etc/kubernetes/pki/apiserver.crt")
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(machine.public) in sans.get_values_for_type(x509.IPAddress)
    before = rendered_files(cluster)
    record = cluster.run_action("control-plane/0", "get-kubeconfig")
    assert record["status"] == "completed", record
    config = json.loads(record["results"]["kubeconfig"])
    assert config["clusters"][0]["cluster"]["server"] == f"https://{machine.public}:6443"
    assert rendered_files(cluster) == before


def test_status_reports_files_and_recorded_services(cluster: Model) -> None:
    text = format_status(cluster)
    for unit in cluster.world.units:
        assert unit in text
    assert "recorded only (model runs without processes)" in text
    assert "running (pid" not in text


# -- the real validators -----------------------------------------------------------------------


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed")
    return path


def test_kubeconfigs_pass_kubectl(cluster: Model, tmp_path: Path) -> None:
    kubectl = _need("kubectl")
    checked = 0
    for unit in units(cluster, "worker") + units(cluster, "control-plane"):
        for path in sorted((cluster.unit_root(unit) / "etc/kubernetes").glob("*.conf")):
            if "clusters" not in path.read_text():
                continue
            result = subprocess.run(
                [kubectl, "config", "view", "--kubeconfig", str(path), "--minify", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, "HOME": str(tmp_path)},
            )
            assert result.returncode == 0, f"{path}: {result.stderr}"
            assert json.loads(result.stdout)["clusters"], path
            checked += 1
    assert checked >= 2 * len(units(cluster, "worker"))


def test_recorded_services_render_units_systemd_accepts(cluster: Model, tmp_path: Path) -> None:
    analyze = _need("systemd-analyze")
    from kaji.host import ServiceSpec, render_systemd_unit

    specs: dict[str, ServiceSpec] = {}
    for machine in cluster.world.machines:
        for path in (cluster.machine_root(machine) / "var/lib/kaji").rglob("*.json"):
            state = json.loads(path.read_text())
            if isinstance(state, dict) and "spec" in state:
                spec = ServiceSpec.from_dict(state["spec"])
                specs.setdefault(spec.name, spec)
    assert {"etcd", "kube-apiserver", "kubelet", "containerd"} <= set(specs)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for spec in specs.values():
        # The binaries are not on this machine: verify against stand-ins at a real path.
        stub = stubs / spec.name
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        runnable = ServiceSpec.from_dict({**spec.to_dict(), "argv": [str(stub), *spec.argv[1:]]})
        (unit_dir / spec.unit_name).write_text(render_systemd_unit(runnable))
    for unit in {u for s in specs.values() for u in (*s.after, *s.requires, *s.wants)}:
        if not (unit_dir / unit).exists():
            (unit_dir / unit).write_text("[Service]\nExecStart=/bin/true\n")
    for spec in specs.values():
        result = subprocess.run(
            [analyze, "verify", str(unit_dir / spec.unit_name)],
            capture_output=True,
            text=True,
            cwd=unit_dir,
            timeout=60,
            check=False,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
        )
        assert result.returncode == 0, f"{spec.name}: {result.stderr}"


def test_containerd_config_passes_containerd(cluster: Model) -> None:
    containerd = _need("containerd")
    for worker in units(cluster, "worker"):
        config = cluster.unit_root(worker) / "etc/containerd/config.toml"
        result = subprocess.run(
            [containerd, "--config", str(config), "config", "dump"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "[plugins" in result.stdout


def test_every_certificate_chains_to_a_ca_on_its_machine_with_openssl(
    cluster: Model, tmp_path: Path
) -> None:
    openssl = _need("openssl")
    checked = 0
    for machine in cluster.world.machines:
        root = cluster.machine_root(machine)
        certs: dict[Path, x509.Certificate] = {}
        for path in root.rglob("*.crt"):
            certs[path] = x509.load_pem_x509_certificate(path.read_bytes())
        cas = {
            p: c
            for p, c in certs.items()
            if c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        }
        for path, cert in certs.items():
            if path in cas:
                continue
            issuers = [p for p, c in cas.items() if c.subject == cert.issuer]
            assert issuers, f"{path}: no CA on machine {machine} issued it"
            result = subprocess.run(
                [openssl, "verify", "-CAfile", str(issuers[0]), str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, f"{path}: {result.stdout}{result.stderr}"
            checked += 1
    assert checked >= len(cluster.world.machines)


# -- changes to the model ----------------------------------------------------------------------


def test_add_unit_worker_converges_with_the_new_node_configured(fresh: Model) -> None:
    (added,) = fresh.add_unit("worker")
    assert added == "worker/2"
    assert_all_active(fresh)
    assert len(units(fresh, "cni")) == 4
    assert api_endpoints(fresh) <= endpoints_seen_by(fresh, added)
    config = kubeconfigs(fresh, added)["kubelet.conf"]
    assert config is not None
    cert = base64.b64decode(config["users"][0]["user"]["client-certificate-data"]).decode()
    verify_chain(cert, cluster_ca(fresh))
    allocations = json.loads(fresh.peer_relation("cni").app_data["cni"]["allocations"])  # type: ignore[union-attr]
    assert len(allocations) == 4


def test_remove_unit_etcd_removes_the_member_and_updates_the_control_plane(fresh: Model) -> None:
    gone = fresh.world.machines[fresh.world.units["etcd/1"].machine].address
    fresh.remove_unit("etcd/1")
    assert_all_active(fresh)
    rel = fresh.relation_between("etcd", "control-plane")
    assert rel is not None
    published = set(json.loads(rel.app_data["etcd"]["client-urls"]))
    assert published == _etcd_members(fresh)
    assert not any(gone in url for url in published)
    assert _etcd_servers(fresh, "control-plane/0") == published
    peers = fresh.peer_relation("etcd")
    assert peers is not None
    members = json.loads(peers.app_data["etcd"]["members"])
    assert "etcd-1" not in members
    assert len(members) == 2


def test_ha_overlay_gives_every_worker_three_endpoints_and_leader_change_keeps_the_ca(
    tmp_path: Path,
) -> None:
    model = deploy(tmp_path / "model", overlays=(HA,))
    try:
        assert_all_active(model)
        endpoints = api_endpoints(model)
        assert len(endpoints) == 3
        for worker in units(model, "worker"):
            assert endpoints <= endpoints_seen_by(model, worker)
        ca = cluster_ca(model)
        etcd_rel = model.relation_between("etcd", "control-plane")
        assert etcd_rel is not None
        etcd_ca = etcd_rel.app_data["etcd"]["ca-cert"]
        secrets = {s.id: s.latest for s in model.world.secrets.values()}
        model.set_leader("control-plane/2")
        model.set_leader("etcd/2")
        assert_all_active(model)
        assert cluster_ca(model) == ca
        assert etcd_rel.app_data["etcd"]["ca-cert"] == etcd_ca
        assert {s.id: s.latest for s in model.world.secrets.values()} == secrets
        for worker in units(model, "worker"):
            config = kubeconfigs(model, worker)["kubelet.conf"]
            assert config is not None
            cert = base64.b64decode(config["users"][0]["user"]["client-certificate-data"])
            verify_chain(cert.decode(), ca)
    finally:
        model.destroy()


def test_settled_cluster_rewrites_nothing_and_restarts_nothing(fresh: Model) -> None:
    bags = {r.id: json.dumps([r.app_data, r.unit_data]) for r in fresh.world.relations.values()}
    files = rendered_files(fresh)
    for hook in ("update-status", "config-changed"):
        stats = fresh.run_everywhere(hook)
        assert stats is not None
        writes = {u: c["files_written"] for u, c in stats.per_unit.items() if c["files_written"]}
        restarts = {
            u: c["services_restarted"] + c["services_started"]
            for u, c in stats.per_unit.items()
            if c["services_restarted"] + c["services_started"]
        }
        assert not writes, f"{hook} wrote files: {writes}"
        assert not restarts, f"{hook} restarted services: {restarts}"
        assert stats.hooks == len(fresh.world.units), f"{hook} caused more hooks"
    assert {
        r.id: json.dumps([r.app_data, r.unit_data]) for r in fresh.world.relations.values()
    } == bags
    assert rendered_files(fresh) == files


# -- delivery order ----------------------------------------------------------------------------


def _describe_pem(kind: str, block: bytes) -> bytes:
    if kind == "CERTIFICATE":
        cert = x509.load_pem_x509_certificate(block)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = sorted(str(n.value) for n in sans)
        except x509.ExtensionNotFound:
            names = []
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        return f"<cert {subject} by {issuer} {names}>".encode()
    if kind == "CERTIFICATE REQUEST":
        csr = x509.load_pem_x509_csr(block)
        return f"<csr {csr.subject.rfc4514_string()}>".encode()
    return f"<{kind.lower()}>".encode()


def _normalise(content: bytes) -> bytes:
    """Key material differs between deployments by design: compare what it says instead."""

    def b64(match: re.Match[bytes]) -> bytes:
        decoded = base64.b64decode(match.group(2))
        return match.group(1) + _normalise(decoded)

    content = re.sub(
        rb'("(?:certificate-authority|client-certificate|client-key)-data": ")([^"]+)',
        b64,
        content,
    )
    content = PEM.sub(lambda m: _describe_pem(m.group(1).decode(), m.group(0)), content)
    # Values that must be random (cluster token, encryption key) differ per deployment; the
    # charms' private caches hold wall-clock times and digests of (random) inputs.
    content = re.sub(rb"kaji-etcd-[0-9a-f]{16}", b"kaji-etcd-<token>", content)
    content = re.sub(rb'("secret"\s*:\s*")[^"]+"', rb'\1<random>"', content)
    content = re.sub(rb'("(?:at|recheck-after)"\s*:\s*)[0-9.]+', rb"\1<time>", content)
    content = re.sub(rb'("digest"\s*:\s*")[0-9a-f]{64}"', rb'\1<digest>"', content)
    return content


#: JSON lists of one entry per other node, in pod-subnet order (which node has which subnet
#: varies with the delivery order); sorted once their subnets are named by node.
PEER_LISTS = ("routes", "vxlan_peers")


def _bounded(value: str, tail: bytes = rb"[0-9/]") -> re.Pattern[bytes]:
    return re.compile(rb"(?<![0-9A-Za-z.:])" + re.escape(value.encode()) + rb"(?!" + tail + rb")")


def _vtep_mac(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The cni charm's VXLAN MAC for a pod subnet: 0a:58 then the network address's bytes."""
    return ":".join(f"{b:02x}" for b in (0x0A, 0x58, *net.network_address.packed))


def _node_names(model: Model, *, pods: bool = True) -> list[tuple[re.Pattern[bytes], bytes]]:
    """Name what depends on which machine got which cni unit by that machine's principal.

    Subordinates arrive in principal order, so the cni unit (and so the pod subnet, its
    gateway, VTEP address and MAC) a machine gets varies with the seed, as in Juju. Machine
    addresses are named by machine too (another free loopback range is as good); ``pods``
    false leaves the pod subnets alone (statuses name them per cni unit, which is stable).
    """
    names: list[tuple[re.Pattern[bytes], bytes]] = []
    peers = model.peer_relation("cni")
    assert peers is not None
    allocations = json.loads(peers.app_data["cni"]["allocations"])
    for cni, subnet in sorted(allocations.items()) if pods else ():
        node = str(model.world.units[cni].principal).encode()
        net = ipaddress.ip_network(subnet)
        names += [
            (_bounded(net.compressed, rb"[0-9]"), b"<pod-subnet " + node + b">"),
            (_bounded(str(net.network_address + 1)), b"<pod-gateway " + node + b">"),
            (_bounded(str(net.network_address)), b"<vtep " + node + b">"),
            (_bounded(_vtep_mac(net), rb"[0-9a-f:]"), b"<vtep-mac " + node + b">"),
        ]
    for machine in model.world.machines.values():
        for kind in ("bind", "address", "public", "loopback"):
            address = getattr(machine, kind)
            if address:
                token = f"<machine-{machine.id} {kind}>".encode()
                names.append((_bounded(address), token))
    return names


def _sort_peer_lists(content: bytes) -> bytes:
    """A JSON file with its per-node lists sorted, when it round-trips exactly; else as is."""
    try:
        data = json.loads(content)
    except ValueError:
        return content
    for indent in (2, None, 1):
        for end in (b"\n", b""):
            if json.dumps(data, indent=indent).encode() + end == content:
                break
        else:
            continue
        break
    else:
        return content  # a format this does not reproduce: compare it byte for byte

    def walk(value: object) -> object:
        if isinstance(value, dict):
            return {
                k: sorted(map(walk, v), key=json.dumps)
                if k in PEER_LISTS and isinstance(v, list)
                else walk(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return json.dumps(walk(data), indent=indent).encode() + end


def _comparable(model: Model) -> dict[str, dict[str, bytes]]:
    """Every machine's files, with the model directory, key material and nodes normalised."""
    directory = str(model.directory).encode()
    names = _node_names(model)
    found: dict[str, dict[str, bytes]] = {}
    for unit, files in rendered_files(model).items():
        found[unit] = {}
        for path, content in files.items():
            content = content.replace(directory, b"<model>")
            if path.endswith(".json") and b'"fingerprint"' in content:
                # Service-manager state: the fingerprint hashes paths under the model dir.
                # How often a service was (re)started depends on the order (see the benchmark).
                state = json.loads(content)
                for key in ("fingerprint", "starts", "restarts", "reloads"):
                    state.pop(key, None)
                content = json.dumps(state, sort_keys=True).encode()
            content = _normalise(content)
            for pattern, token in names:
                content = pattern.sub(token, content)
            # A digest of a config file compared above (as rendered: addresses differ with
            # the loopback range the model got).
            content = re.sub(
                rb'("KAJI_CONFIG_DIGEST"\s*:\s*")[0-9a-f]{64}"', rb'\1<digest>"', content
            )
            found[unit][path] = _sort_peer_lists(content)
    return found


def _statuses(model: Model) -> dict[str, str]:
    """Every unit's status, machine addresses named by machine."""
    names = _node_names(model, pods=False)
    found = {}
    for unit, status in statuses(model).items():
        text = status.encode()
        for pattern, token in names:
            text = pattern.sub(token, text)
        found[unit] = text.decode()
    return found


def test_fifty_shuffled_delivery_orders_render_identical_files(tmp_path: Path) -> None:
    reference = deploy(tmp_path / "reference")
    try:
        assert_all_active(reference)
        expected = _comparable(reference)
        expected_status = _statuses(reference)
    finally:
        reference.destroy()
    for seed in range(50):
        model = deploy(tmp_path / f"seed-{seed}", seed=seed)
        try:
            got = _comparable(model)
            differences = [
                f"{unit}: status {expected_status[unit]!r} became {s!r}"
                for unit, s in _statuses(model).items()
                if expected_status.get(unit) != s
            ]
            for unit, files in expected.items():
                differences += [
                    f"{unit}: {path} {'differs' if path in got[unit] else 'missing'}"
                    for path in sorted(files)
                    if got[unit].get(path) != files[path]
                ]
                differences += [f"{unit}: {p} extra" for p in sorted(set(got[unit]) - set(files))]
            assert not differences, f"seed {seed} rendered another cluster:\n" + "\n".join(
                differences
            )
        finally:
            model.destroy()


# -- the one test with real processes ------------------------------------------------------------


def test_real_etcd_processes_run_and_are_reported_running() -> None:
    _need("etcd")
    # A short directory: containerd's sockets live under the machine root, and a unix socket
    # path may hold at most 107 bytes.
    short = Path(tempfile.mkdtemp(prefix="kaji-m-", dir="/tmp"))
    model = deploy(short / "m", processes=True)
    try:
        assert_all_active(model)
        for unit in units(model, "etcd"):
            services = {s.name: s for s in machine_services(model.unit_root(unit))}
            assert services["etcd"].state == "running", statuses(model)[unit]
            pid = services["etcd"].pid
            assert pid is not None
            assert Path(f"/proc/{pid}").exists()
        text = format_status(model)
        assert text.count("etcd: running (pid") == 3
        # Binaries that are not here are reported as recorded, never as running.
        for name in ("kube-apiserver", "kubelet"):
            if shutil.which(name) is None:
                assert f"{name}: recorded only ({name} not on this machine)" in text
    finally:
        stopped = model.destroy()
        shutil.rmtree(short, ignore_errors=True)
    assert sum(1 for s in stopped if s.endswith("/etcd")) == 3

"""The offline model's network: a loopback range per model, four addresses per machine.

Every model takes a /16 of 127.0.0.0/8 that no other live model holds (``127.B.0.0/16``, B
from 2: 127.0.0.0/16 is left to localhost and the workload tests' 127.0.1.N), claimed in a
registry directory shared by every model on this host (``KAJI_MODEL_RANGES``, default
``/tmp/kaji-model-ranges``), recorded in model.json and released by ``destroy``. A range
where some process already listens is skipped.

Each machine gets, from its model's range (all on this host's loopback):

- a **bind** address: the address of the machine's own interface, what ``network-get``
  gives as ``bind-addresses``: the charm's services listen here;
- an **ingress** address: what other units use to reach it (``ingress-addresses``,
  ``ingress-address``/``private-address`` in relation data), as behind a cloud's NAT; a
  forwarder (``kaji.model.forward``) relays each port a service listens on at the bind
  address from the ingress address;
- a **public** address (shown by ``status``);
- a **loopback** address standing in for the machine's 127.0.0.1 (``KAJI_HOST_LOOPBACK``).

A charm that listens on its ingress address, or advertises its bind address to other units,
works on a flat network and fails behind NAT or with spaces: the model fails its hook
(``address_problems``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kaji.host.errors import ServiceError
from kaji.host.processes import ProcessManager, process_start_time, socket_owners, tcp_listeners
from kaji.host.services import ServiceSpec
from kaji.lazy import lazy_import

if TYPE_CHECKING:
    from scenario import mocking
else:
    mocking = lazy_import("scenario.mocking")

REGISTRY_ENV = "KAJI_MODEL_RANGES"
DEFAULT_REGISTRY = Path("/tmp/kaji-model-ranges")  # noqa: S108 (host-wide on purpose)
FIRST_BLOCK, LAST_BLOCK = 2, 254
#: How long a claim whose model has not saved its model.json yet stays held.
CLAIM_GRACE = 3600.0
_ROLES = ("bind", "ingress", "public", "loopback")


class NetworkError(Exception):
    """No loopback range is free, or an address the model needs is held."""


@dataclasses.dataclass(frozen=True)
class MachineAddresses:
    """The four addresses of one machine."""

    bind: str
    ingress: str
    public: str
    loopback: str


def network_range(block: int) -> str:
    """The CIDR of block ``block``."""
    return f"127.{block}.0.0/16"


def machine_addresses(block: int, machine_id: int) -> MachineAddresses:
    """Machine ``machine_id``'s addresses in block ``block`` (4 per machine, none ending .0)."""
    values = []
    for role in range(len(_ROLES)):
        index = machine_id * len(_ROLES) + role
        third, fourth = divmod(index, 254)
        if third > 255:
            raise NetworkError(f"machine {machine_id} does not fit in {network_range(block)}")
        values.append(f"127.{block}.{third}.{fourth + 1}")
    return MachineAddresses(*values)


def registry_dir() -> Path:
    """Where the models of this host claim their ranges."""
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def _claim_path(block: int) -> Path:
    return registry_dir() / f"127.{block}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held(path: Path, block: int) -> bool:
    """Whether the claim at ``path`` belongs to a model that still exists."""
    try:
        claim = json.loads(path.read_text())
        model = Path(claim["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        world = json.loads((model / "model.json").read_text())
    except FileNotFoundError:
        young = time.time() - float(claim.get("created", 0)) < CLAIM_GRACE
        return young and _pid_alive(int(claim.get("pid", 0)))
    except (OSError, ValueError):
        return True  # a model is there, being written: leave it alone
    return int((world.get("network") or {}).get("block", -1)) == block


def _idle(path: Path) -> bool:
    """Whether a claim's model runs nothing: its creator is gone and no service is alive."""
    try:
        claim = json.loads(path.read_text())
        model = Path(claim["model"])
        if _pid_alive(int(claim.get("pid", 0))):
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return True
    for pid_file in model.glob("machines/*/root/var/lib/kaji/processes/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            if process_start_time(int(pid_file.read_text().strip())) is not None:
                return False
    return True


def foreign_listeners(block: int) -> list[str]:
    """``address:port`` of every TCP listener inside block ``block``."""
    prefix = f"127.{block}."
    return [
        f"{lst.address}:{lst.port}" for lst in tcp_listeners() if lst.address.startswith(prefix)
    ]


def claim_range(model_dir: Path) -> int:
    """Claim a block for the model in ``model_dir``; return it.

    Raises:
        NetworkError: every block is held by a live model or has foreign listeners.
    """
    registry = registry_dir()
    registry.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(registry, 0o1777)  # noqa: S103 (shared by every user, like /tmp)
    busy: list[str] = []
    for block in range(FIRST_BLOCK, LAST_BLOCK + 1):
        path = _claim_path(block)
        if path.exists():
            if _held(path, block):
                continue
            with contextlib.suppress(OSError):
                path.unlink()  # a model removed without destroy: its claim is stale
        listening = foreign_listeners(block)
        if listening:
            busy.append(f"{network_range(block)} ({', '.join(listening[:3])})")
            continue
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"model": str(model_dir), "pid": os.getpid(), "created": time.time()}, f)
        return block
    # Every block is claimed: take back the oldest claim of a model that runs nothing (its
    # creator gone, no live service), e.g. a test model removed with its directory kept.
    idle = sorted(
        (p.stat().st_mtime, p)
        for p in registry.glob("127.*.json")
        if _idle(p) and p.stem.count(".") == 1
    )
    for _, path in idle:
        block = int(path.stem.split(".")[1])
        if not FIRST_BLOCK <= block <= LAST_BLOCK or foreign_listeners(block):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"model": str(model_dir), "pid": os.getpid(), "created": time.time()}, f)
        return block
    detail = f"; in use by other processes: {'; '.join(busy[:3])}" if busy else ""
    raise NetworkError(
        f"no free loopback range for a model in {registry} (every 127.B.0.0/16, B "
        f"{FIRST_BLOCK}-{LAST_BLOCK}, is held by a live model){detail}"
    )


def release_range(block: int, model_dir: Path) -> None:
    """Release the model's claim on ``block`` (only if the claim is this model's)."""
    path = _claim_path(block)
    try:
        claim = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if claim.get("model") == str(model_dir):
        with contextlib.suppress(OSError):
            path.unlink()


# -- checks after a hook ------------------------------------------------------------------------


def _mentions(text: str, address: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(address)}(?![\d])", text) is not None


def advertised_bind(
    unit: str, addresses: MachineAddresses, bags: Iterable[tuple[str, Mapping[str, str]]]
) -> list[str]:
    """Problems: values the unit wrote for others (``(where, bag)``) naming its bind address."""
    problems = []
    for where, bag in bags:
        for key, value in sorted(bag.items()):
            if key in ("egress-subnets", "ingress-address", "private-address"):
                continue
            if _mentions(str(value), addresses.bind):
                problems.append(
                    f"{unit} advertised its bind address {addresses.bind} in {where} "
                    f"(key {key!r}): other units reach it at its ingress address "
                    f"{addresses.ingress} (behind NAT or with spaces the bind address is "
                    "unreachable)"
                )
    return problems


def _flag_pairs(argv: list[str]) -> list[tuple[str, str, str]]:
    """(flag, value, as written) for ``--flag=value`` and ``--flag value`` arguments."""
    pairs = []
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        flag, sep, value = arg[2:].partition("=")
        if sep:
            pairs.append((flag, value, arg))
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            pairs.append((flag, argv[i + 1], f"{arg} {argv[i + 1]}"))
    return pairs


def _config_file_pairs(argv: list[str]) -> list[tuple[str, str, str]]:
    """(key, value, as written) of a YAML ``--config-file`` the service reads (etcd's)."""
    pairs = []
    for flag, value, _ in _flag_pairs(argv):
        if flag not in ("config-file", "config"):
            continue
        try:
            content = yaml.safe_load(Path(value).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(content, dict):
            pairs += [
                (str(k), str(v), f"{k}: {v} in {Path(value).name}")
                for k, v in content.items()
                if isinstance(v, (str, list))
            ]
    return pairs


def service_specs(root: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of every service a machine's managers keep under ``/var/lib/kaji``."""
    found = []
    base = root / "var/lib/kaji"
    for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and isinstance(state.get("spec"), dict):
            if state.get("running") is False:
                continue
            found.append((path.stem, [str(a) for a in state["spec"].get("argv") or []]))
    return found


def spec_stamps(root: Path) -> dict[str, int]:
    """Service name -> modification time of its state file (to see what a hook touched)."""
    base = root / "var/lib/kaji"
    stamps: dict[str, int] = {}
    for path in base.rglob("*.json") if base.is_dir() else []:
        with contextlib.suppress(OSError):
            stamps[path.stem] = path.stat().st_mtime_ns
    return stamps


def flag_problems(
    root: Path, addresses: MachineAddresses, names: Iterable[str] | None = None
) -> list[str]:
    """Problems in service command lines (``names`` only): listen on ingress, advertise bind."""
    problems = []
    wanted = None if names is None else set(names)
    for name, argv in service_specs(root):
        if wanted is not None and name not in wanted:
            continue
        for flag, value, written in _flag_pairs(argv) + _config_file_pairs(argv):
            if re.search(r"listen|bind", flag) and any(
                _mentions(value, a) for a in (addresses.ingress, addresses.public)
            ):
                problems.append(
                    f"service {name} listens on the machine's ingress address ({written}): "
                    f"listen on its bind address {addresses.bind}; the ingress address "
                    "belongs to the NAT in front of the machine"
                )
            if "advertise" in flag and _mentions(value, addresses.bind):
                problems.append(
                    f"service {name} advertises the machine's bind address ({written}): "
                    f"other units reach it at its ingress address {addresses.ingress}"
                )
    return problems


# -- ingress forwarders -------------------------------------------------------------------------


def _forwarders(state_dir: Path) -> Any:
    return ProcessManager(state_dir, stop_timeout=2.0, startup_grace=0.05)


def sync_forwarders(
    state_dir: Path, addresses: MachineAddresses, service_pids: Mapping[int, str]
) -> list[str]:
    """Forward ingress:port -> bind:port for every port listened on at the bind address.

    Returns problems: a process of this machine (``service_pids``: process group -> service)
    listening on the ingress or public address itself.
    """
    listeners = tcp_listeners()
    bind_ports = sorted({lst.port for lst in listeners if lst.address == addresses.bind})
    manager = _forwarders(state_dir)
    wanted = {f"ingress-{port}": port for port in bind_ports}
    for name in manager.list():
        if name not in wanted:
            manager.remove(name)
    problems: list[str] = []
    forwarded = {port for name, port in wanted.items() if manager.is_running(name)}
    own = [
        lst
        for lst in listeners
        if lst.address in (addresses.ingress, addresses.public) and lst.port not in forwarded
    ]
    owners = socket_owners(lst.inode for lst in own)
    for lst in own:
        pid = owners.get(lst.inode)
        try:
            group = os.getpgid(pid) if pid else None
        except OSError:
            group = None
        service = service_pids.get(group) if group is not None else None
        if service is not None:
            problems.append(
                f"service {service} listens on the machine's ingress address "
                f"{lst.address}:{lst.port}: listen on its bind address {addresses.bind}; the "
                "ingress address belongs to the NAT in front of the machine"
            )
    lib = str(Path(__file__).resolve().parents[2])
    for name, port in wanted.items():
        spec = ServiceSpec(
            name,
            [
                sys.executable,
                "-m",
                "kaji.model.forward",
                addresses.ingress,
                addresses.bind,
                str(port),
            ],
            environment={"PYTHONPATH": lib},
            description=f"ingress {addresses.ingress}:{port} -> {addresses.bind}:{port}",
        )
        try:
            manager.ensure(spec)
        except ServiceError as error:
            problems.append(f"cannot forward the ingress address: {error}")
    deadline = time.monotonic() + 5.0
    pending = {port for port in wanted.values()}
    while pending and time.monotonic() < deadline:
        live = {lst.port for lst in tcp_listeners() if lst.address == addresses.ingress}
        pending -= live
        if pending:
            time.sleep(0.02)
    return problems


def stop_forwarders(state_dir: Path) -> None:
    """Stop every forwarder of a machine."""
    if state_dir.is_dir():
        manager = _forwarders(state_dir)
        for name in manager.list():
            manager.remove(name)


@contextlib.contextmanager
def container_bindings() -> Iterator[None]:
    """Let ``network-get`` answer for container-scoped endpoints, as Juju does.

    scenario refuses network-get on a container-scoped endpoint; Juju binds it on the machine
    the unit runs on (a subordinate's is its principal's), so it answers with the unit's
    ``juju-info`` binding, which the model sets to that machine's addresses.
    """
    backend = mocking._MockModelBackend
    own = backend.__dict__.get("network_get")
    original = backend.network_get

    def network_get(self: Any, binding_name: str, relation_id: int | None = None) -> Any:
        endpoints = dict(self._charm_spec.get_all_relations())
        if (endpoints.get(binding_name) or {}).get("scope") == "container":
            binding_name = "juju-info"
        return original(self, binding_name, relation_id)

    backend.network_get = network_get  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del backend.network_get
        else:
            backend.network_get = own  # type: ignore[method-assign]

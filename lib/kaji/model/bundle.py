"""Load a Juju bundle with its overlays and check it against the charms' own metadata.

Everything Juju would refuse at deploy time (and a few things it would accept but that cannot
work) is found here, before a cloud is touched, and reported all at once.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kaji.model.metadata import metadata_problems

#: Keys a Juju 3.6 bundle may hold at the top level.
BUNDLE_KEYS = frozenset(
    {
        "name",
        "description",
        "default-base",
        "applications",
        "relations",
        "machines",
        "saas",
        "type",
        "bundle",
    }
)
#: Keys an application of a bundle may hold (Juju 3.6; `series` is gone).
APPLICATION_KEYS = frozenset(
    {
        "charm",
        "channel",
        "revision",
        "base",
        "num_units",
        "to",
        "options",
        "annotations",
        "constraints",
        "storage",
        "devices",
        "resources",
        "expose",
        "exposed-endpoints",
        "trust",
        "bindings",
        "offers",
        "plan",
        "placement",
        "scale",
    }
)
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "float": (int, float),
    "boolean": (bool,),
    "secret": (str,),
}
ENDPOINT_RE = re.compile(r"^(?P<app>[a-z][a-z0-9-]*):(?P<endpoint>[a-z][a-z0-9-]*)$")


class BundleError(Exception):
    """The bundle cannot be deployed; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"- {p}" for p in self.problems))


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One relation endpoint a charm declares."""

    name: str
    role: str  # provides | requires | peers
    interface: str
    scope: str = "global"
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class CharmInfo:
    """What a charm declares: its name, endpoints, config options, subordinate flag."""

    name: str
    source: Path  # a packed .charm or a charm source directory
    subordinate: bool
    endpoints: Mapping[str, Endpoint]
    options: Mapping[str, Mapping[str, Any]]
    #: The metadata as read (charmcraft.yaml, or metadata.yaml with ``config``).
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def packed(self) -> bool:
        """Whether the charm comes from a packed .charm archive."""
        return self.source.suffix == ".charm"


@dataclasses.dataclass(frozen=True)
class Application:
    """An application of the bundle, with the charm it runs."""

    name: str
    charm: CharmInfo
    units: int
    options: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Relation:
    """A relation between two application endpoints (provider side first when there is one)."""

    app_a: str
    endpoint_a: str
    app_b: str
    endpoint_b: str
    interface: str
    container_scoped: bool

    def __str__(self) -> str:
        return f"{self.app_a}:{self.endpoint_a} {self.app_b}:{self.endpoint_b}"


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A checked bundle: applications and relations Juju would accept."""

    path: Path
    base: str
    applications: Mapping[str, Application]
    relations: tuple[Relation, ...]

    def peer_endpoints(self) -> list[tuple[str, Endpoint]]:
        """Every peer endpoint of every application."""
        return [
            (app.name, ep)
            for app in self.applications.values()
            for ep in app.charm.endpoints.values()
            if ep.role == "peers"
        ]


def charm_info_from_metadata(meta: Mapping[str, Any], source: Path) -> CharmInfo:
    """Read the endpoints and options out of charmcraft.yaml (or metadata+config) content."""
    endpoints: dict[str, Endpoint] = {}
    for role in ("provides", "requires", "peers"):
        section = meta.get(role) or {}
        for name, spec in section.items() if isinstance(section, Mapping) else ():
            spec = {"interface": spec} if isinstance(spec, str) else spec
            spec = spec if isinstance(spec, Mapping) else {}
            endpoints[name] = Endpoint(
                name=name,
                role=role,
                interface=str(spec.get("interface", "")),
                scope=str(spec.get("scope", "global")),
                limit=spec.get("limit") if isinstance(spec.get("limit"), int) else None,
            )
    config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    options = (config or {}).get("options") or {}
    return CharmInfo(
        name=str(meta.get("name", "")),
        source=source,
        subordinate=bool(meta.get("subordinate", False)),
        endpoints=endpoints,
        options=options if isinstance(options, Mapping) else {},
        meta=meta,
    )


def read_charm(source: Path) -> CharmInfo:
    """Read a charm's declarations from a packed .charm or from a charm source directory."""
    if source.is_dir():
        return charm_info_from_metadata(
            yaml.safe_load((source / "charmcraft.yaml").read_text()) or {}, source
        )
    with zipfile.ZipFile(source) as archive:
        names = set(archive.namelist())
        meta: dict[str, Any] = {}
        # Juju reads metadata.yaml and config.yaml; charmcraft.yaml only stands in for them.
        first = "metadata.yaml" if "metadata.yaml" in names else "charmcraft.yaml"
        if first in names:
            meta.update(yaml.safe_load(archive.read(first)) or {})
        if "config.yaml" in names:
            meta["config"] = yaml.safe_load(archive.read("config.yaml")) or {}
    return charm_info_from_metadata(meta, source)


def find_charm_sources(charms_dir: Path) -> dict[str, Path]:
    """Map charm name -> source directory for every charm under ``charms_dir``."""
    found: dict[str, Path] = {}
    for charmcraft in sorted(charms_dir.glob("*/charmcraft.yaml")):
        meta = yaml.safe_load(charmcraft.read_text()) or {}
        if meta.get("name"):
            found[str(meta["name"])] = charmcraft.parent
    return found


def merge_overlay(bundle: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Apply an overlay the way Juju does: applications merged key by key, relations added.

    An application set to null in the overlay is removed, with its relations.
    """
    merged = copy.deepcopy(bundle)
    apps = merged.setdefault("applications", {}) or {}
    for name, spec in (overlay.get("applications") or {}).items():
        if spec is None:
            apps.pop(name, None)
            merged["relations"] = [
                r
                for r in merged.get("relations") or []
                if not any(str(end).split(":")[0] == name for end in r)
            ]
            continue
        target = apps.setdefault(name, {}) or {}
        for key, value in spec.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
        apps[name] = target
    merged["applications"] = apps
    merged["relations"] = list(merged.get("relations") or []) + list(
        overlay.get("relations") or []
    )
    for key, value in overlay.items():
        if key not in ("applications", "relations"):
            merged[key] = value
    return merged


def _load_yaml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror}")
        return None
    except yaml.YAMLError as e:
        problems.append(f"{path}: not valid YAML: {e}")
        return None
    if not isinstance(content, dict):
        problems.append(f"{path}: a bundle must be a YAML mapping")
        return None
    return content


def _resolve_charm(
    app: str, ref: Any, bundle_dir: Path, sources: Mapping[str, Path], problems: list[str]
) -> CharmInfo | None:
    if not isinstance(ref, str) or not ref:
        problems.append(f"application {app!r}: `charm` must name a charm")
        return None
    if not ref.startswith((".", "/")):
        problems.append(
            f"application {app!r}: charm {ref!r} is not a local path; kaji bundles use the "
            "packed charms in build/"
        )
        return None
    path = (bundle_dir / ref).resolve()
    try:
        if path.exists():
            return read_charm(path)
    except (OSError, zipfile.BadZipFile, yaml.YAMLError) as e:
        problems.append(f"application {app!r}: cannot read charm {path}: {e}")
        return None
    # Not packed yet: use the source directory of the charm with the same name.
    name = path.name.removesuffix(".charm")
    if name in sources:
        return read_charm(sources[name])
    problems.append(
        f"application {app!r}: charm {ref!r} is neither packed ({path} missing) nor a charm "
        f"source under charms/ (known: {', '.join(sorted(sources)) or 'none'})"
    )
    return None


def _display(path: Path) -> str:
    """A path relative to the working directory when it is under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_options(app: str, charm: CharmInfo, options: Any, problems: list[str]) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        problems.append(f"application {app!r}: `options` must be a mapping")
        return
    for key, value in options.items():
        declared = charm.options.get(key)
        if declared is None:
            problems.append(
                f"application {app!r}: option {key!r} is not an option of {charm.name}"
            )
            continue
        expected = CONFIG_TYPES.get(str(declared.get("type", "string")), (str,))
        if isinstance(value, bool) and bool not in expected:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            problems.append(
                f"application {app!r}: option {key!r} must be {declared.get('type', 'string')}, "
                f"got {json.dumps(value)}"
            )


def _parse_endpoint(text: Any, problems: list[str]) -> tuple[str, str] | None:
    match = ENDPOINT_RE.match(str(text))
    if not match:
        problems.append(f"relation endpoint {text!r} must be written app:endpoint")
        return None
    return match["app"], match["endpoint"]


def _check_relation(
    pair: Any, apps: Mapping[str, Application], problems: list[str]
) -> Relation | None:
    if not isinstance(pair, list) or len(pair) != 2:
        problems.append(f"relation {pair!r} must be a list of two app:endpoint strings")
        return None
    ends = [_parse_endpoint(end, problems) for end in pair]
    if None in ends:
        return None
    resolved: list[tuple[str, Endpoint]] = []
    for app_name, endpoint_name in ends:  # type: ignore[misc]
        app = apps.get(app_name)
        if app is None:
            problems.append(f"relation {pair[0]} - {pair[1]}: no application {app_name!r}")
            continue
        endpoint = app.charm.endpoints.get(endpoint_name)
        if endpoint is None:
            problems.append(
                f"relation {pair[0]} - {pair[1]}: {app.charm.name} has no endpoint "
                f"{endpoint_name!r} (it has: {', '.join(sorted(app.charm.endpoints))})"
            )
            continue
        resolved.append((app_name, endpoint))
    if len(resolved) != 2:
        return None
    (a, ea), (b, eb) = resolved
    where = f"relation {a}:{ea.name} - {b}:{eb.name}"
    ok = True
    if "peers" in (ea.role, eb.role):
        problems.append(f"{where}: peer endpoints are related by Juju itself, not by a bundle")
        ok = False
    elif {ea.role, eb.role} != {"provides", "requires"}:
        problems.append(f"{where}: both ends {ea.role}; one must provide and one require")
        ok = False
    if ea.interface != eb.interface:
        problems.append(f"{where}: interfaces differ ({ea.interface} vs {eb.interface})")
        ok = False
    container = "container" in (ea.scope, eb.scope)
    if container and not (apps[a].charm.subordinate or apps[b].charm.subordinate):
        problems.append(f"{where}: container scope needs a subordinate on one side")
        ok = False
    if ok and a == b:
        problems.append(f"{where}: an application cannot be related to itself")
        ok = False
    if not ok:
        return None
    if ea.role == "requires":
        (a, ea), (b, eb) = (b, eb), (a, ea)
    return Relation(a, ea.name, b, eb.name, ea.interface, container)


def load_bundle(
    path: Path | str,
    overlays: Iterable[Path | str] = (),
    charms_dir: Path | str | None = None,
) -> Bundle:
    """Load, merge and check a bundle; raise BundleError listing every problem found."""
    path = Path(path)
    problems: list[str] = []
    data = _load_yaml(path, problems)
    for overlay_path in overlays:
        overlay = _load_yaml(Path(overlay_path), problems)
        if data is not None and overlay is not None:
            data = merge_overlay(data, overlay)
    if data is None:
        raise BundleError(problems)
    charms_root = Path(charms_dir) if charms_dir else path.resolve().parent.parent / "charms"
    sources = find_charm_sources(charms_root) if charms_root.is_dir() else {}

    for key in sorted(set(data) - BUNDLE_KEYS):
        hint = " (Juju 3.6 bundles use default-base)" if key == "series" else ""
        problems.append(f"unknown top-level key {key!r}{hint}")
    base = str(data.get("default-base", ""))
    if not re.fullmatch(r"ubuntu@\d\d\.\d\d", base):
        problems.append(f"default-base must be like ubuntu@24.04, got {base!r}")

    apps: dict[str, Application] = {}
    checked: set[Path] = set()
    app_specs = data.get("applications")
    if not isinstance(app_specs, dict) or not app_specs:
        problems.append("the bundle has no applications")
        app_specs = {}
    for name, spec in app_specs.items():
        if not isinstance(spec, dict):
            problems.append(f"application {name!r} must be a mapping")
            continue
        for key in sorted(set(spec) - APPLICATION_KEYS):
            hint = " (use base)" if key == "series" else ""
            problems.append(f"application {name!r}: unknown key {key!r}{hint}")
        charm = _resolve_charm(name, spec.get("charm"), path.parent, sources, problems)
        if charm is None:
            continue
        if charm.source not in checked:  # Juju's own metadata check, once per charm
            checked.add(charm.source)
            problems += metadata_problems(charm.meta, f"charm {_display(charm.source)}")
        units = spec.get("num_units", 0 if charm.subordinate else 1)
        if charm.subordinate:
            if "num_units" in spec or "to" in spec:
                problems.append(
                    f"application {name!r}: {charm.name} is a subordinate; it takes no "
                    "num_units or placement (its units follow its principals)"
                )
        elif not isinstance(units, int) or isinstance(units, bool) or units < 0:
            problems.append(f"application {name!r}: num_units must be a whole number >= 0")
            units = 0
        _check_options(name, charm, spec.get("options"), problems)
        apps[name] = Application(name, charm, int(units or 0), dict(spec.get("options") or {}))

    relations: list[Relation] = []
    raw_relations = data.get("relations") or []
    if not isinstance(raw_relations, list):
        problems.append("`relations` must be a list")
        raw_relations = []
    for pair in raw_relations:
        relation = _check_relation(pair, apps, problems)
        if relation is None:
            continue
        if relation in relations:  # provider side first, so order in the bundle is irrelevant
            problems.append(f"relation {relation} is listed twice")
            continue
        relations.append(relation)

    for app in apps.values():
        if app.charm.subordinate and not any(
            r.container_scoped and app.name in (r.app_a, r.app_b) for r in relations
        ):
            problems.append(
                f"application {app.name!r}: subordinate without a container-scoped relation "
                "to a principal would never get a unit"
            )
        for endpoint in app.charm.endpoints.values():
            if endpoint.limit is None or endpoint.role == "peers":
                continue
            used = sum(
                1
                for r in relations
                if (r.app_a, r.endpoint_a) == (app.name, endpoint.name)
                or (r.app_b, r.endpoint_b) == (app.name, endpoint.name)
            )
            if used > endpoint.limit:
                problems.append(
                    f"application {app.name!r}: endpoint {endpoint.name!r} takes at most "
                    f"{endpoint.limit} relation(s), the bundle gives {used}"
                )
    if problems:
        raise BundleError(problems)
    return Bundle(path=path, base=base, applications=apps, relations=tuple(relations))

"""Command line of the offline model.

    python -m kaji.model check BUNDLE [--overlay F]       check a bundle against the charms
    python -m kaji.model deploy BUNDLE [--overlay F] [--model-dir D] [--replace] [--source]
    python -m kaji.model add-unit worker [-n N]
    python -m kaji.model remove-unit etcd/1
    python -m kaji.model config control-plane key=value
    python -m kaji.model leader control-plane/1         move leadership
    python -m kaji.model run update-status              a hook on every unit
    python -m kaji.model run-action etcd/0 ACTION [k=v ...]   a Juju action; prints results
    python -m kaji.model wait [--minutes N]             let model time pass (update-status...)
    python -m kaji.model refresh worker [--path DIR]    new charm code: upgrade-charm
    python -m kaji.model attach-resource etcd etcd FILE resource-get gives FILE: upgrade-charm
    python -m kaji.model status [--format json]
    python -m kaji.model destroy                        stop every process, remove the model

The model lives in ``--model-dir`` (default ``.kaji-model``) between calls.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kaji.lazy import lazy_import
from kaji.model.bundle import Bundle, BundleError, find_charm_sources, load_bundle
from kaji.model.charms import newest_mtime
from kaji.model.errors import ModelError, NotConverging

if TYPE_CHECKING:
    import scenario.logger

    from kaji.model import engine, status
else:  # ops, scenario and the engine only for a command that runs the model
    scenario = lazy_import("scenario")
    engine = lazy_import("kaji.model.engine")
    status = lazy_import("kaji.model.status")

#: Exit codes: OK (every unit active), problem (bad bundle, request or no convergence),
#: unsettled (the model settled but some unit is not active).
EXIT_OK, EXIT_PROBLEM, EXIT_NOT_ACTIVE = 0, 1, 2


def format_bundle(bundle: Bundle) -> str:
    """Render a checked bundle as a juju-status-like table of apps and relations."""
    rows = [("App", "Charm", "Units", "From")]
    for app in bundle.applications.values():
        units = "(subordinate)" if app.charm.subordinate else str(app.units)
        origin = "packed" if app.charm.packed else "source"
        rows.append((app.name, app.charm.name, units, f"{origin}: {app.charm.source}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[3] for r in rows
    ]
    lines += ["", "Integration provider".ljust(32) + "Requirer".ljust(32) + "Interface"]
    for rel in bundle.relations:
        provider = f"{rel.app_a}:{rel.endpoint_a}"
        requirer = f"{rel.app_b}:{rel.endpoint_b}"
        scope = " (container)" if rel.container_scoped else ""
        lines.append(provider.ljust(32) + requirer.ljust(32) + rel.interface + scope)
    for app_name, endpoint in bundle.peer_endpoints():
        peer = f"{app_name}:{endpoint.name}"
        lines.append(peer.ljust(32) + peer.ljust(32) + endpoint.interface + " (peer)")
    return "\n".join(line.rstrip() for line in lines)


def _check(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(args.bundle, args.overlay, args.charms_dir)
    except BundleError as e:
        print(f"{args.bundle}: {len(e.problems)} problem(s):\n{e}", file=sys.stderr)
        return EXIT_PROBLEM
    print(format_bundle(bundle))
    print(
        f"\n{args.bundle}: OK ({len(bundle.applications)} applications, "
        f"{len(bundle.relations)} relations)"
    )
    return EXIT_OK


def _finish(model: engine.Model, summary: str) -> int:
    model.save()
    print(status.format_status(model))
    print(f"\n{summary}")
    not_active = sorted(
        name
        for name, unit in model.world.units.items()
        if unit.error or unit.status[0] != "active"
    )
    if not_active:
        print(f"not active: {', '.join(not_active)}", file=sys.stderr)
        return EXIT_NOT_ACTIVE
    return EXIT_OK


def _warn_stale_packed(args: argparse.Namespace) -> None:
    """Say so when a packed charm the bundle names is older than its source."""
    bundle = load_bundle(args.bundle, args.overlay, args.charms_dir)
    root = Path(args.charms_dir) if args.charms_dir else bundle.path.resolve().parent.parent
    sources = find_charm_sources(root if args.charms_dir else root / "charms")
    for app in bundle.applications.values():
        source = sources.get(app.charm.name)
        if app.charm.packed and source and app.charm.source.stat().st_mtime < newest_mtime(source):
            print(
                f"warning: {app.charm.source} is older than {source}: the model runs the packed "
                "charm (repack, or remove it to run the source)",
                file=sys.stderr,
            )


def _command(args: argparse.Namespace) -> int:
    if args.command == "deploy":
        if args.replace and (args.model_dir / "model.json").exists():
            stopped = engine.Model.load(args.model_dir).destroy()
            print(f"replaced the model in {args.model_dir} ({len(stopped)} service(s) stopped)")
        model = engine.Model.create(
            args.model_dir, processes=not args.no_processes, seed=args.seed
        )
        try:
            model.deploy(
                args.bundle, args.overlay, args.charms_dir, settle=False, from_source=args.source
            )
        except BundleError as e:
            model.destroy()
            print(f"{args.bundle}: {len(e.problems)} problem(s):\n{e}", file=sys.stderr)
            return EXIT_PROBLEM
        if not args.source:
            _warn_stale_packed(args)
        model.save()
        try:
            stats = model.settle()
        except NotConverging as e:
            model.save()
            print(str(e), file=sys.stderr)
            return EXIT_PROBLEM
        return _finish(model, f"deployed {args.bundle}: {stats.hooks} hooks, {stats.seconds:.1f}s")
    if args.command == "destroy":
        model = engine.Model.load(args.model_dir)
        stopped = model.destroy()
        print(f"stopped {len(stopped)} service(s); removed {model.directory}")
        return EXIT_OK
    model = engine.Model.load(args.model_dir, seed=args.seed)
    if args.command == "run-action":
        return _run_action(model, args)
    if args.command == "status":
        print(
            status.format_status_json(model)
            if args.format == "json"
            else status.format_status(model)
        )
        return EXIT_OK
    try:
        if args.command == "add-unit":
            added = model.add_unit(args.application, args.num_units, settle=False)
            what = f"added {', '.join(added)}"
        elif args.command == "remove-unit":
            for name in args.units:
                model.remove_unit(name, settle=False)
            what = f"removed {', '.join(args.units)}"
        elif args.command == "config":
            if not args.settings:
                app = model.world.apps.get(args.application)
                if app is None:
                    raise ModelError(f"no application {args.application}")
                options = model.code(args.application).config.get("options") or {}
                for key in sorted(options):
                    value = app.config.get(key, options[key].get("default"))
                    print(f"{key}={value}")
                return EXIT_OK
            values = {}
            for setting in args.settings:
                key, sep, value = setting.partition("=")
                if not sep:
                    raise ModelError(f"expected key=value, got {setting!r}")
                values[key] = value
            model.set_config(args.application, values, settle=False)
            what = f"configured {args.application}"
        elif args.command == "leader":
            model.set_leader(args.unit, settle=False)
            what = f"{args.unit} is the leader"
        elif args.command == "wait":
            model.save()
            stats = model.wait(args.minutes)
            return _finish(
                model,
                f"waited {args.minutes:g} minutes (model time now {model.now:%Y-%m-%d %H:%M}Z): "
                f"{stats.hooks} hooks, {stats.seconds:.1f}s",
            )
        elif args.command == "refresh":
            model.refresh(args.application, args.path, settle=False)
            what = f"refreshed {args.application}"
        elif args.command == "attach-resource":
            name, sep, file = args.resource.partition("=")
            if not sep:
                file, name = name, args.file or ""
            elif args.file:
                raise ModelError("give the resource as NAME=FILE or NAME FILE, not both")
            if not name or not file:
                raise ModelError("expected NAME=FILE (or NAME FILE)")
            new = model.attach_resource(args.application, name, file, settle=False)
            what = f"attached {name} to {args.application}" + ("" if new else " (unchanged)")
        else:  # run
            model.run_everywhere(args.hook, settle=False)
            what = f"ran {args.hook} on every unit"
        model.save()
        stats = model.settle()
    except NotConverging as e:
        model.save()
        print(str(e), file=sys.stderr)
        return EXIT_PROBLEM
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PROBLEM
    return _finish(model, f"{what}: {stats.hooks} hooks, {stats.seconds:.1f}s")


def parse_action_args(settings: Sequence[str], *, strings: bool = False) -> dict[str, object]:
    """``key=value`` action params as ``juju run`` reads them.

    Values are YAML (``n=3`` is an int, ``on=true`` a boolean) unless ``strings``
    (``--string-args``); a dotted key (``file.kind=xz``) makes nested mappings.
    """
    params: dict[str, object] = {}
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep or not key:
            raise ModelError(f"expected key=value, got {setting!r}")
        value: object = raw
        if not strings:
            try:
                value = yaml.safe_load(raw) if raw else ""
            except yaml.YAMLError:
                value = raw
        *parents, leaf = key.split(".")
        target = params
        for part in parents:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ModelError(f"{key!r}: {part!r} is already a value")
            target = nested
        target[leaf] = value
    return params


def _run_action(model: engine.Model, args: argparse.Namespace) -> int:
    """Run one action, print its outcome as ``juju run`` does (YAML), save the model."""
    settings = [a for a in args.params if a != "--string-args"]
    strings = args.string_args or len(settings) != len(args.params)
    params = parse_action_args(settings, strings=strings)
    record = model.run_action(args.unit, args.action, params, settle=False)
    model.save()
    try:
        model.settle()
    except NotConverging as e:
        model.save()
        print(str(e), file=sys.stderr)
        return EXIT_PROBLEM
    model.save()
    shown: dict[str, object] = {"id": record["id"], "status": record["status"]}
    if record["message"]:
        shown["message"] = record["message"]
    if record["log"]:
        shown["log"] = record["log"]
    shown["results"] = record["results"]
    print(yaml.safe_dump({record["unit"]: shown}, sort_keys=False).rstrip())
    return EXIT_OK if record["status"] == "completed" else EXIT_PROBLEM


def main(argv: Sequence[str] | None = None) -> int:
    """Run the offline-model command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m kaji.model",
        description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").split("\n")[2:]),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if name != "check":
            p.add_argument(
                "--model-dir", type=Path, default=Path(".kaji-model"), help="default .kaji-model"
            )
            p.add_argument(
                "--seed", type=int, default=None, help="shuffle hook delivery with this seed"
            )
        return p

    check = add("check", "check a bundle against the charms' metadata")
    deploy = add("deploy", "deploy a bundle into a new offline model and settle it")
    for p in (check, deploy):
        p.add_argument("bundle")
        p.add_argument("--overlay", action="append", default=[], help="overlay file (repeat)")
        p.add_argument("--charms-dir", default=None, help="charm sources (default: ../charms)")
    deploy.add_argument(
        "--source",
        action="store_true",
        help="run every charm from its source directory even when a packed charm exists",
    )
    deploy.add_argument(
        "--replace", action="store_true", help="destroy a model already in --model-dir first"
    )
    deploy.add_argument(
        "--no-processes",
        action="store_true",
        help="only record services, even those whose binaries are installed here",
    )
    p = add("add-unit", "add units to an application")
    p.add_argument("application")
    p.add_argument("-n", "--num-units", type=int, default=1)
    p = add("remove-unit", "remove units")
    p.add_argument("units", nargs="+")
    p = add("config", "show or set an application's config")
    p.add_argument("application")
    p.add_argument("settings", nargs="*", metavar="key=value")
    p = add("leader", "make a unit its application's leader")
    p.add_argument("unit")
    p = add("run", "run a hook on every unit (update-status, config-changed)")
    p.add_argument("hook", choices=["update-status", "config-changed", "upgrade-charm"])
    p = add("run-action", "run a Juju action on a unit (app/leader: the leader)")
    p.add_argument("unit")
    p.add_argument("action")
    p.add_argument(
        "params",
        nargs=argparse.REMAINDER,
        metavar="key=value",
        help="YAML values (n=3 is an int); --string-args anywhere: every value a string",
    )
    p.add_argument("--string-args", action="store_true", help=argparse.SUPPRESS)
    p = add("wait", "let model time pass: update-status every 5 minutes, secret deadlines")
    p.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    p = add("refresh", "run new charm code (upgrade-charm, then config-changed)")
    p.add_argument("application")
    p.add_argument("--path", default=None, help="the new charm (default: the source, re-read)")
    p = add("attach-resource", "give a charm resource a file (upgrade-charm)")
    p.add_argument("application")
    p.add_argument("resource", metavar="NAME=FILE")
    p.add_argument("file", nargs="?", default=None, help=argparse.SUPPRESS)
    p = add("status", "show the model")
    p.add_argument("--format", choices=["tabular", "json"], default="tabular")
    add("destroy", "stop every process of the model and remove its directory")
    args = parser.parse_args(argv)

    # scenario's logger sets its own level when scenario is imported: import, then quieten
    logging.getLogger(scenario.logger.logger.name).setLevel(logging.ERROR)
    if args.command == "check":
        return _check(args)
    try:
        return _command(args)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())

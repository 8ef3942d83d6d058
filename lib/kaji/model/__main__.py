"""Command line of the offline model: ``python -m kaji.model check BUNDLE [--overlay F]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kaji.model.bundle import Bundle, BundleError, load_bundle


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the offline-model command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m kaji.model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a bundle against the charms' metadata")
    check.add_argument("bundle")
    check.add_argument("--overlay", action="append", default=[], help="overlay file (repeat)")
    check.add_argument("--charms-dir", default=None, help="charm sources (default: ../charms)")
    args = parser.parse_args(argv)

    try:
        bundle = load_bundle(args.bundle, args.overlay, args.charms_dir)
    except BundleError as e:
        print(f"{args.bundle}: {len(e.problems)} problem(s):\n{e}", file=sys.stderr)
        return 1
    print(format_bundle(bundle))
    print(
        f"\n{args.bundle}: OK ({len(bundle.applications)} applications, "
        f"{len(bundle.relations)} relations)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`router models list | show | promote | rollback`: operate the model registry.

A promoted version is picked up by running servers through hot reload (they
watch the registry's `CURRENT` pointer), so `promote` and `rollback` are how an
operator changes what serves traffic without a restart.
"""

from __future__ import annotations

import argparse
import json
import sys

from router.cli import add_command
from router.errors import ConfigError
from router.registry import Registry

__all__ = ["register"]

# The metrics worth a column in `list`; everything else is in `show`.
_LIST_METRICS = ("aiq", "auc", "log_loss", "logloss", "brier")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "models",
        help="list, inspect, promote and roll back trained model versions",
        description="Operate the model registry (immutable version folders under "
                    "models/versions/ and the CURRENT pointer that serving follows).",
        examples=[
            "router models list",
            "router models show v20250101-030000-1a2b3c",
            "router models show --gate   # the current version's gate report, readable",
            "router models promote v20250101-030000-1a2b3c",
            "router models rollback --registry /srv/router/models",
        ],
        handler=lambda args: (args.models_parser.print_help(), 2)[1],
    )
    parser.set_defaults(models_parser=parser)
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--registry", metavar="DIR", default=None,
                       help="registry folder (default: $ROUTER_REGISTRY or the repo's models/)")

    p = actions.add_parser("list", help="every version, oldest first; * marks the current one")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_list)

    p = actions.add_parser("show", help="metadata, files, gate report and history of a version")
    common(p)
    p.add_argument("version", nargs="?", default=None, help="version id (default: current)")
    p.add_argument("--gate", action="store_true",
                   help="print the version's gate report as `router retrain` printed it "
                        "(each source's comparison; IPS, SNIPS and DR estimates with standard "
                        "errors and effective sample size) instead of the JSON")
    p.set_defaults(handler=_show)

    p = actions.add_parser("promote", help="verify a version (checksums, load, a check "
                           "prediction), then make it current (servers hot-reload it)")
    common(p)
    p.add_argument("version", help="version id")
    p.add_argument("--reason", default="manual promote", help="recorded in the history")
    p.set_defaults(handler=_promote)

    p = actions.add_parser("rollback", help="go back to the previously current version")
    common(p)
    p.add_argument("--reason", default="manual rollback", help="recorded in the history")
    p.set_defaults(handler=_rollback)


def _list(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    infos = registry.versions()
    if args.json:
        print(json.dumps([{"id": v.id, "created": v.created, "path": str(v.path),
                           "is_current": v.is_current, "metrics": v.metrics} for v in infos],
                         indent=2, default=str))
        return 0
    if not infos:
        print(f"no versions in {registry.root}", file=sys.stderr)
        return 0
    columns = [m for m in _LIST_METRICS if any(m in v.metrics for v in infos)]
    width = max(len("version"), *(len(v.id) for v in infos))
    print(f"  {'version':<{width}}  {'created':<25}" + "".join(f"  {c:>9}" for c in columns))
    for v in infos:
        cells = "".join(f"  {_fmt(v.metrics.get(c)):>9}" for c in columns)
        print(f"{'*' if v.is_current else ' '} {v.id:<{width}}  {v.created:<25}{cells}")
    return 0


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _show(args: argparse.Namespace) -> int:
    shown = Registry(args.registry).show(args.version)
    if not args.gate:
        print(compact_json(shown))
        return 0
    gate = (shown.get("meta") or {}).get("gate")
    if not gate:
        raise ConfigError(f"version {shown['version_id']} has no gate report",
                          hint="versions made by `router retrain` have one; `router models "
                               "show` without --gate prints everything stored")
    from training.gate import GateReport

    print(GateReport.from_dict(gate).format())
    return 0


def compact_json(value: object, indent: int = 0) -> str:
    """JSON indented like `json.dumps(indent=2)`, but a list of plain values on one
    line: a gate report's curves are hundreds of numbers, one per line otherwise."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(str(k))}: {compact_json(v, indent + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list | tuple) and value and any(
            isinstance(v, dict | list | tuple) for v in value):
        items = [pad + compact_json(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, default=str)


def _promote(args: argparse.Namespace) -> int:
    # Verified first (checksums, a load, a check prediction): a corrupt version is
    # refused with the reason and CURRENT stays, so no server started later fails.
    previous = Registry(args.registry).promote(args.version, reason=args.reason)
    print(f"promoted {args.version} (was {previous or 'none'}; verified: checksums, "
          "load and a check prediction)")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    previous = registry.current_version()
    target = registry.rollback(reason=args.reason)
    print(f"rolled back to {target} (was {previous or 'none'})")
    return 0

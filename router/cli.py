"""The `router` command.

Online commands (route, serve, fake-upstream) are registered here; offline ones
(train, eval, import, ...) live in `training` and are discovered through the
`router.commands` entry-point group, so `router` never imports `training`.

Every failure is printed as one `error:` line (plus a `hint:` line when there is
something to do about it) and exits 1, usage errors included (an unknown command
gets a "did you mean"); `--debug` shows the traceback instead.

A serving-only install (`pip install cost-aware-router`, the Docker image) has
no offline side: an offline command whose package (`training`) is absent is
left out of `router --help` and, when typed, named with the extra that brings
it; one whose libraries are absent (pandas, matplotlib, ...) fails with the
same hint.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import NoReturn

from router import __version__
from router.errors import ConfigError, RouterError

__all__ = ["main", "build_parser", "add_command", "configure_logging", "print_error",
           "OFFLINE_EXTRA", "OFFLINE_MODULES"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "router.commands"

# What a serving-only install lacks, and the extra that brings it.
OFFLINE_EXTRA = "cost-aware-router[train]"
OFFLINE_MODULES = frozenset({"training", "pandas", "pyarrow", "matplotlib", "tqdm",
                              "apscheduler", "dask", "distributed"})

# name -> "module:function" for commands of this package; imported lazily so
# `router --help` and `router route` stay fast.
ONLINE_COMMANDS = {
    "route": "router.commands.route:register",
    "serve": "router.commands.serve:register",
    "fake-upstream": "router.commands.fake_upstream:register",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors take the CLI's one form: `error:`, `hint:`, exit 1.

    argparse would print the whole usage block and exit 2; the README promises one
    line and exit 1 for every failure, and a script should not need two codes.
    """

    commands: Sequence[str] = ()
    # name -> the missing module, for offline commands this install lacks
    unavailable: dict[str, str] = {}

    def error(self, message: str) -> NoReturn:
        where = "" if self.prog == "router" else f"{self.prog}: "
        raise ConfigError(f"{where}{message}",
                          hint=f"`{self.prog} --help` shows the options, with examples")


def _unknown_command(argv: Sequence[str], commands: Sequence[str],
                     unavailable: dict[str, str] | None = None) -> ConfigError | None:
    """The error for a mistyped command, with the closest command as a suggestion."""
    for token in argv:
        if token in ("-h", "--help", "--version"):
            return None
        if token.startswith("-"):
            continue
        if token in commands:
            return None
        if unavailable and token in unavailable:
            return ConfigError(f"command {token!r} is not installed here (no module "
                               f"{unavailable[token]!r}): it is part of the offline side",
                               hint=f"pip install '{OFFLINE_EXTRA}'")
        close = difflib.get_close_matches(token, commands, n=1)
        if close:
            return ConfigError(f"unknown command {token!r} (did you mean {close[0]!r}?)",
                               hint="`router --help` lists the commands")
        return ConfigError(f"unknown command {token!r}",
                           hint=f"commands: {', '.join(commands)}")
    return None


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    description: str,
    examples: Sequence[str],
    handler: Callable[[argparse.Namespace], int | None],
) -> argparse.ArgumentParser:
    """Add a sub-command whose `--help` ends with runnable examples."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    parser = subparsers.add_parser(
        name, help=help, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _load(target: str) -> Callable[[argparse._SubParsersAction], None]:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="router",
        description="Cost-aware LLM router: send each request to the cheapest model "
                    "predicted to meet your quality bar.",
        epilog="examples:\n"
               "  router demo-data --out demo.csv\n"
               "  router train --data demo.csv --out models/demo\n"
               "  router eval --model models/demo --data demo.csv --plot eval.png\n"
               "  router route 'Prove that sqrt(2) is irrational.' --model models/demo --bar 0.8\n"
               "  router serve --model models/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"router {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    registrars = dict(ONLINE_COMMANDS)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        registrars.setdefault(entry.name, entry.value)
    unavailable: dict[str, str] = {}
    for name in sorted(registrars):
        try:
            register = _load(registrars[name])
        except ImportError as exc:
            missing = _offline_module(exc)
            if missing is not None:  # a serving-only install: expected, said when typed
                unavailable[name] = missing
                continue
            # A plugin whose dependencies are not installed must not break the rest.
            log.warning("command %r is unavailable: %s", name, exc)
            continue
        register(subparsers)
    parser.commands = sorted(subparsers.choices)
    parser.unavailable = unavailable
    if unavailable:
        parser.epilog = (f"{parser.epilog}\n\nnot installed here (the offline side, pip install "
                         f"'{OFFLINE_EXTRA}'): {', '.join(sorted(unavailable))}")
    return parser


def _offline_module(exc: ImportError) -> str | None:
    """The offline-only module `exc` is about, or None for any other import failure."""
    name = getattr(exc, "name", None) or ""
    top = name.split(".")[0]
    return name if isinstance(exc, ModuleNotFoundError) and top in OFFLINE_MODULES else None


def configure_logging(debug: bool) -> None:
    """The CLI's log format and level (`router serve` workers call it too)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def print_error(exc: RouterError) -> None:
    """The CLI's one `error:` line and its `hint:` line, on stderr."""
    print(f"error: {_one_line(exc.message)}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {_one_line(exc.hint)}", file=sys.stderr)


def _one_line(text: str) -> str:
    # Driver messages (psycopg, redis) span lines; the contract is one `error:` line.
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    configure_logging(debug)
    try:
        parser = build_parser()
        unknown = _unknown_command(argv, parser.commands, parser.unavailable)
        if unknown is not None:
            raise unknown
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 1
        return int(args.handler(args) or 0)
    except RouterError as exc:
        if debug:
            raise
        print_error(exc)
        return 1
    except ModuleNotFoundError as exc:
        missing = _offline_module(exc)
        if debug or missing is None:
            raise
        print_error(ConfigError(f"this command needs {missing!r}, which is part of the "
                                f"offline side and not installed here",
                                hint=f"pip install '{OFFLINE_EXTRA}'"))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        # Unexpected but common: a path that is not there, a port in use.
        if debug:
            raise
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        print("hint: run again with --debug for the full traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""pumice VERB ...: the entry point. Errors are one line; --debug shows the traceback."""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys
import threading
import traceback
from types import ModuleType

from .. import __version__
from ..errors import PumiceError
from .common import Parser, add_global_options


def verb_modules() -> list[ModuleType]:
    """Every module of this package that defines a verb (an ``add_parser``), by name: a new
    ``cli/<name>.py`` needs no list to join."""
    import pumice.cli

    modules = [importlib.import_module(f"pumice.cli.{m.name}") for m in sorted(pkgutil.iter_modules(pumice.cli.__path__),
                                                                               key=lambda m: m.name)]
    return [m for m in modules if hasattr(m, "add_parser")]


def build_parser() -> Parser:
    parser = Parser(prog="pumice", description="Pumice: EM volumes -> Neuroglancer Precomputed layers, on a laptop or a cluster.")
    parser.add_argument("--version", action="version", version=f"pumice {__version__}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    for module in verb_modules():
        module.add_parser(sub)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    # Schedulers (Slurm, Kubernetes) stop jobs with SIGTERM: wind down as for Ctrl-C. Only while
    # main() runs, so a program that calls main() keeps its own handling afterwards.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        return _main(argv, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str], debug: bool) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.s3_endpoint:
            os.environ["PUMICE_S3_ENDPOINT"] = args.s3_endpoint
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except PumiceError as e:
        if debug:
            traceback.print_exc()
            detail = getattr(e, "detail", None)
            if detail:
                print(detail, file=sys.stderr)
        print(f"pumice: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("pumice: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - anything else is our bug or the environment's
        if debug:
            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"pumice: error: unexpected {type(e).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

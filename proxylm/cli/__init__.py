"""The `proxylm` command line. Each area registers its own verbs:

    proxylm codec train|import|stats|stability|encode   proxylm/cli/codec.py (offline encoding: cli/neural.py)
    proxylm data show|manifest                          proxylm/cli/data.py
    proxylm train | resume                              proxylm/cli/train.py
    proxylm eval bpb|translation                        proxylm/cli/eval.py
    proxylm eval humaneval|codegen|robustness           proxylm/cli/tasks.py (registered by cli/eval.py)
    proxylm generate                                    proxylm/cli/eval.py
    proxylm compare                                     proxylm/cli/compare.py
    proxylm export                                      proxylm/cli/export.py
    proxylm plan                                        proxylm/cli/plan.py

Building the parser imports no torch (tests/test_cli_help.py): a verb module imports what its command runs
inside the command's function.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from proxylm import __version__
from proxylm.cli.args import harden_numbers
from proxylm.core.errors import UserError
from proxylm.core.io import printable

COMMAND_MODULES = [
    "proxylm.cli.codec",
    "proxylm.cli.data",
    "proxylm.cli.train",
    "proxylm.cli.eval",
    "proxylm.cli.compare",
    "proxylm.cli.export",
    "proxylm.cli.plan",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the flag (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line_warnings(command: str):
    """Library warnings (a checkpoint skipped, an unverified load) as `proxylm VERB: warning: ...` lines
    (a formatter only: whoever records warnings, e.g. a test, still gets them)."""

    def format_warning(message, category, filename, lineno, line=None):
        return f"proxylm {command}: warning: {printable(message)}\n"   # file names may hold escape sequences

    return format_warning


PEER_ERRORS = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "socket timeout",
               "timed out", "peer")


def peer_lost(e: BaseException) -> str | None:
    """Under torchrun, a collective that failed because another rank (or the agent) died: one line saying so
    instead of a gloo/NCCL traceback. None for any other error."""
    import os

    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) <= 1:
        return None
    text = str(e).strip()
    if type(e).__name__ not in ("DistBackendError", "DistNetworkError", "DistError") and \
            not any(k in text.lower() for k in PEER_ERRORS):
        return None
    first = printable(text.splitlines()[0][:200]) if text else type(e).__name__
    return (f"rank {os.environ.get('RANK', '?')} of {world}: another rank or the torchrun agent is gone ({first}); "
            f"stopped. Work since the last checkpoint is lost; `proxylm resume RUN_DIR` continues from it")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="proxylm", description="Byte-level LMs trained with proxy compression.")
    parser.add_argument("--version", action="version", version=f"proxylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    harden_numbers(parser)   # every numeric flag, whoever added it: finite, 64-bit, in its range (cli/args.py)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Like parse_args, but `key=value` overrides may also come after options (`train CFG --out x a=b`)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        overrides = [e for e in extra if "=" in e and not e.startswith("-")]
        if hasattr(args, "overrides") and len(overrides) == len(extra):
            args.overrides = list(args.overrides or []) + overrides
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warnings(args.command)
    try:
        if getattr(args, "threads", None) is not None:  # every verb that computes has --threads (README 'Threads')
            from proxylm.core.threads import set_threads

            set_threads(args.threads)
        return int(args.func(args) or 0)
    except (UserError, ValueError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        message = e
        if isinstance(e, OSError) and e.filename is not None and not isinstance(e, FileNotFoundError):
            message = f"{e.filename}: {e.strerror} (check the path and its permissions)"
        print(f"proxylm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        message = peer_lost(e)
        if message is None or getattr(args, "debug", False):
            raise
        print(f"proxylm {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())

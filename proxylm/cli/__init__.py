"""The `proxylm` command line. Each area registers its own verbs:

    proxylm codec train|stats|encode|stability   proxylm/cli/codec.py
    proxylm data show                             proxylm/cli/data.py
    proxylm train | resume                        proxylm/cli/train.py
    proxylm eval bpb|humaneval|robustness         proxylm/cli/eval.py
    proxylm generate                              proxylm/cli/eval.py
    proxylm compare                               proxylm/cli/compare.py
    proxylm export                                proxylm/cli/export.py
"""

from __future__ import annotations

import argparse
import importlib
import sys

from proxylm import __version__
from proxylm.core.errors import UserError

COMMAND_MODULES = [
    "proxylm.cli.codec",
    "proxylm.cli.data",
    "proxylm.cli.train",
    "proxylm.cli.eval",
    "proxylm.cli.compare",
    "proxylm.cli.export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxylm", description="Byte-level LMs trained with proxy compression.")
    parser.add_argument("--version", action="version", version=f"proxylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"proxylm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

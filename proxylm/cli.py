"""The `proxylm` command line. Each area registers its own verbs:

    proxylm codec train|stats|encode|stability   proxylm/codecs/cli.py
    proxylm data show                             proxylm/data/cli.py
    proxylm train | resume                        proxylm/train/cli.py
    proxylm eval bpb|humaneval|robustness         proxylm/eval/cli.py
    proxylm generate                              proxylm/eval/cli.py
    proxylm compare                               proxylm/compare.py
    proxylm export                                proxylm/export.py
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from proxylm import __version__

COMMAND_MODULES = [
    "proxylm.codecs.cli",
    "proxylm.data.cli",
    "proxylm.train.cli",
    "proxylm.eval.cli",
    "proxylm.compare",
    "proxylm.export",
]


class UserError(Exception):
    """An error caused by input; printed as one clear line without a traceback."""


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxylm", description="Byte-level LMs trained with proxy compression.")
    parser.add_argument("--version", action="version", version=f"proxylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # area not built yet
                continue
            raise
        module.add_commands(sub)
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

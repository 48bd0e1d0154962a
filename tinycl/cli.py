"""The `tinycl` command. Each subcommand is a module in `tinycl/commands/` with `add_parser(subparsers)`
(registering itself, with `run(args) -> int` as its handler); they are found by file name."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from tinycl.errors import TinyclError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    import tinycl.commands as commands

    parser = argparse.ArgumentParser(prog="tinycl", description="On-device continual learning for TinyML.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"tinycl.commands.{info.name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TinyclError as err:
        print(f"tinycl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished experiences are saved (use --resume where supported)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

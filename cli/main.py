"""``vigil``: one command line with subcommands.

Each subcommand lives in its own module under ``cli/`` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` to a callable
``(args: argparse.Namespace) -> int``. Modules import heavy packages (torch, av) inside ``func``
only, so that ``vigil serve`` runs in the API image, which has no torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Order is the order of `vigil --help`.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "cli.demo",
    "cli.serve",
    "cli.worker",
    "cli.analyze",
    "cli.evaluate",
    "cli.train",
    "cli.synth",
    "cli.experiment",
    "cli.keys",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand whose module is installed."""
    parser = argparse.ArgumentParser(
        prog="vigil", description="Clinical video event detection with Grad-CAM explanations."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # subcommand not built yet / not shipped in this image
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vigil`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

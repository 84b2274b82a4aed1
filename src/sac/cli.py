"""The ``sac`` command: one entry point, one module per subcommand in :mod:`sac.commands`.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules import only the standard library at top level and import torch & co. inside ``run``, so that
``sac --help`` stays fast. A :class:`~sac.errors.SACError` (a user mistake) is printed as one line
``error: ...`` with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order shown in `sac --help`.
COMMANDS = ("segment", "train", "evaluate", "serve", "info", "data")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in --help (except on required options, which have none) and keep the description's
    line breaks."""

    def _get_help_string(self, action):
        # Options that default to None defer to the library default, which their help text names itself
        # ("(default 30)"); appending argparse's "(default: None)" would contradict it.
        text = action.help or ""
        if action.required or action.default is None or "(default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from sac._version import __version__

    parser = argparse.ArgumentParser(
        prog="sac",
        description="Segment Any Cell: SAM + LoRA + auto-prompts for nuclei segmentation.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"sac {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"sac.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=_Formatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sac.errors import SACError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SACError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

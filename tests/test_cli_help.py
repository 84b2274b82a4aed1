"""`sac --help`: fast (nothing heavy imported to build the parser) and every default shown."""

from __future__ import annotations

import argparse
import subprocess
import sys

from sac.cli import COMMANDS, build_parser

HEAVY = ("torch", "monai", "numpy", "scipy", "skimage", "segment_anything", "lightning", "imageio", "tqdm")


def test_building_the_parser_imports_nothing_heavy():
    code = (
        "import sys; from sac.cli import build_parser; build_parser(); "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _subparsers(parser: argparse.ArgumentParser, path=()):
    """(command path, parser) for every (nested) subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subparsers(sub, (*path, name))


def test_every_subcommand_help_shows_its_defaults():
    subs = dict(_subparsers(build_parser()))
    assert {(c,) for c in COMMANDS} | {("data", "convert"), ("data", "split")} <= set(subs)
    checked = 0
    for path, sub in subs.items():
        text = " ".join(sub.format_help().split())  # argparse wraps lines anywhere
        for action in sub._actions:
            # argparse prints no line (so no default) for an option without help text: that needs help text
            # first, which is the owning command's job; every documented option must show its default.
            if not action.option_strings or not action.help or action.help == argparse.SUPPRESS:
                continue
            if action.default in (None, argparse.SUPPRESS):
                continue
            if action.required:
                assert "(default:" not in (action.help or ""), (path, action.dest)
                continue
            assert f"(default: {action.default})" in text, (path, action.dest)
            checked += 1
    assert checked >= 15


def test_required_options_do_not_claim_a_default():
    evaluate = dict(_subparsers(build_parser()))[("evaluate",)]
    text = " ".join(evaluate.format_help().split())
    assert "dataset root (standard layout) (default" not in text

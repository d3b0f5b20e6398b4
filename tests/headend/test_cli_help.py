"""Every command, sub-command, option and argument of `headend` and `meter` says what it is for."""

from __future__ import annotations

import argparse
from typing import Iterator

from headend.cli.main import build_parser
from tools.meter_cli import parser as meter_parser


def _parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _undocumented(top: argparse.ArgumentParser) -> list[str]:
    missing = []
    for p in _parsers(top):
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{p.prog} {name}" for name in action.choices if name not in helped]
                continue
            if action.help == argparse.SUPPRESS:  # refused on purpose (keys on the command line)
                continue
            if not action.help or not action.help.strip():
                missing.append(f"{p.prog} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_headend_option_has_help() -> None:
    missing = _undocumented(build_parser())
    assert missing == []


def test_every_meter_option_has_help() -> None:
    assert _undocumented(meter_parser()) == []


def test_help_prints_for_every_command(capsys) -> None:
    for p in _parsers(build_parser()):
        p.print_help()
        assert p.prog in capsys.readouterr().out

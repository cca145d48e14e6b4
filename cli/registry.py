"""The subcommands: each module of cli/ registers its commands with their options right above the handler
(as click's decorators do), and cli_app.py builds the parser from this table."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

COMMANDS: dict[str, "Command"] = {}


@dataclass
class Command:
    name: str
    help: str
    options: tuple  # option(...) tuples, or functions that add arguments to the command's parser
    run: Callable  # (settings, arguments) -> exit code


def option(*flags, **settings) -> tuple:
    return flags, settings


def command(name: str, help: str, *options):
    def register(run: Callable) -> Callable:
        COMMANDS[name] = Command(name, help, options, run)
        return run
    return register


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in COMMANDS.values():
        subparser = commands.add_parser(entry.name, help=entry.help, description=entry.run.__doc__ or entry.help)
        for item in entry.options:
            if callable(item):
                item(subparser)
            else:
                flags, settings = item
                subparser.add_argument(*flags, **settings)

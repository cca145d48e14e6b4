"""Training options as a dataclass whose fields are the command-line flags: one field, one flag with its help,
so that the CLI, the training subprocess and a version's manifest say the same thing."""
from __future__ import annotations

import argparse
import dataclasses

from common.errors import ApprentiError


class Options:
    """Mixed into a dataclass whose fields carry `help` (and optional `choices`) metadata."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.type == "bool":
                parser.add_argument(flag, action="store_true", help=f.metadata["help"])
            else:
                parser.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"],
                                    **({"choices": f.metadata["choices"]} if "choices" in f.metadata else {}))

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace):
        try:
            return cls(**{f.name: getattr(arguments, f.name) for f in dataclasses.fields(cls)})
        except ValueError as error:
            raise ApprentiError(f"bad training option: {error}") from None

    def to_arguments(self) -> list[str]:
        arguments = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                arguments += [flag] if value else []
            else:
                arguments += [flag, str(value)]
        return arguments

    def training_settings(self) -> dict:
        """What decides the trained model: two runs with the same data and these give the same model."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name != "force"}

    def problems(self) -> list[str]:
        """The fields that must be 1 or more, or 0 or more, out of range."""
        found = []
        for f in dataclasses.fields(self):
            value, least = getattr(self, f.name), f.metadata.get("least")
            if least is not None and value < least:
                found.append(f"{f.name}={value}: use {least} or more")
        return found

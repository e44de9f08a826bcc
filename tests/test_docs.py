"""The docs describe the settings and commands that exist, and nothing that does not."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import click

from segue.cli import cli
from segue.reference_docs import commands_reference, settings_reference
from segue.settings import SegueSettings

REPO = Path(__file__).resolve().parents[1]
GENERATED = {"configuration.md": settings_reference, "commands.md": lambda: commands_reference(cli)}
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
SETTING = re.compile(r"(?<![\w/.-])(" + "|".join(SegueSettings.model_fields) + r")\.([a-z_*]+)")
COMMAND = re.compile(r"(?<![\w./-])segue ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")


def prose_docs() -> list[Path]:
    docs = [REPO / "README.md", *REPO.glob("*/README.md"), *(REPO / "docs").glob("*.md")]
    return [p for p in docs if p.name not in GENERATED]


def test_the_generated_references_are_current():
    for name, render in GENERATED.items():
        assert (REPO / "docs" / name).read_text() == render() + "\n", \
            f"docs/{name} is out of date: run `segue config docs --write docs`"


def test_every_setting_and_command_the_docs_name_exists():
    sections = SegueSettings.model_fields
    problems = []
    for doc in prose_docs():
        for span in CODE.findall(doc.read_text()):
            for section, key in SETTING.findall(span):
                known = sections[section].annotation.model_fields
                if not fnmatch.filter(known, key):  # `index.*`, `kafka.sasl_*` name groups of keys
                    problems.append(f"{doc.relative_to(REPO)}: `{section}.{key}` is not a setting")
            for first, second in COMMAND.findall(span):
                command = cli.commands.get(first)
                if command is None:
                    problems.append(f"{doc.relative_to(REPO)}: `segue {first}` is not a command")
                elif isinstance(command, click.Group) and second and second not in command.commands:
                    problems.append(f"{doc.relative_to(REPO)}: `segue {first} {second}` is not a command")
    assert not problems, "\n".join(problems)

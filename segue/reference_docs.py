"""The configuration and command references, generated from the settings models and the CLI.

`segue config docs --write docs/` keeps `docs/configuration.md` and `docs/commands.md` true by
construction; a test fails when a setting or a command changes without them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from segue.settings import SegueSettings


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value, default=str)}`"


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_reference() -> str:
    lines = ["# Configuration reference", "",
             "Generated from `segue/settings.py` by `segue config docs`; do not edit by hand.", "",
             "Each key is set in `segue.yaml` (or the file `$SEGUE_CONFIG` names) or by its environment",
             "variable; the variable wins. `segue config show` prints the values in effect.", ""]
    for section, section_field in SegueSettings.model_fields.items():
        model = section_field.annotation
        lines += [f"## `{section}`", "", _cell(model.__doc__ or ""), "",
                  "| key | environment variable | type | default | meaning |", "|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            lines.append(f"| `{section}.{name}` | `SEGUE_{section.upper()}__{name.upper()}` | "
                         f"{_cell(_type(field.annotation))} | {_cell(_default(field))} | "
                         f"{_cell(field.description or '')} |")
        lines.append("")
    return "\n".join(lines)


def _commands(group: click.Group, prefix: str):
    for name in sorted(group.commands):
        command = group.commands[name]
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from _commands(command, path)
        else:
            yield path, command


def _job_help(module: str) -> str:
    """The options section of a spark-submit job's `--help`."""
    import contextlib
    import importlib
    import io

    job = importlib.import_module(module)  # outside the capture: imports may log
    out, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the docs must not depend on it
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            job.main(["--help"])
    finally:
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    text = out.getvalue()
    return text[text.index("options:"):].rstrip() if "options:" in text else text.rstrip()


def commands_reference(cli: click.Group) -> str:
    lines = ["# Command reference", "", "Generated from the `segue` command line by `segue config docs`; "
             "do not edit by hand. `segue <command> --help` says the same.", ""]
    for path, command in _commands(cli, "segue"):
        context = click.Context(command, info_name=path)
        lines += [f"## `{path}`", "", "```", command.get_usage(context).removeprefix("Usage: "), "```", "",
                  _cell((command.help or "").split("\n\n")[0]), ""]
        job = getattr(command, "job_module", None)
        if job is not None:  # a spark-submit job: its own argparse options
            lines += ["```", _job_help(job), "```", ""]
        params = [p for p in command.params if isinstance(p, click.Option)]
        if params:
            lines += ["| option | meaning |", "|---|---|"]
            for p in params:
                flags = ", ".join(f"`{o}`" for o in p.opts + p.secondary_opts)
                lines.append(f"| {flags} | {_cell(p.help or '')} |")
            lines.append("")
    return "\n".join(lines)

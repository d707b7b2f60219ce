"""What the commands print: results on stdout (a table or JSON), errors as one line on stderr."""

from __future__ import annotations

import json
from typing import Any

import typer


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_mapping(title: str, values: dict[str, Any]) -> None:
    """A two-column Rich table on stdout; floats with four decimals."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in values.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def show(title: str, values: dict[str, Any], as_json: bool) -> None:
    """A command's result: JSON when asked, else a table."""
    if as_json:
        print_json(values)
    else:
        print_mapping(title, values)


def print_nested(title: str, summary: dict[str, Any]) -> None:
    """A table of the flat values, then one table per nested mapping."""
    print_mapping(title, {k: v for k, v in summary.items() if not isinstance(v, dict)})
    for key, value in summary.items():
        if isinstance(value, dict):
            print_mapping(key, value)


def print_sets(sets: dict[str, list[Any]], titles: dict[str, str]) -> None:
    """``compare --list``: each set with its configurations and their run keys."""
    for name, rows in sets.items():
        typer.echo(f"{typer.style(name, bold=True)}: {titles[name]}")
        for row in rows:
            typer.echo(f"  {row.name:<22} {row.key()}  model={row.model}")


def error_line(message: str) -> None:
    """One line on stderr: ``error: <message>``, with the message's own line breaks folded."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {text}", err=True)

"""`smallfleet models`: list the base models available offline."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table


@click.command("models")
def command() -> None:
    """List packaged base models, whether they are installed, and how to install them.

    Any local model folder, .gguf file, or hub id (when online) works as --base too.
    """
    from smallfleet.models import packaged_models

    table = Table(show_header=True)
    for col in ("name", "package", "status", "what"):
        table.add_column(col)
    for m in packaged_models().values():
        path = m.locate()
        table.add_row(m.name, m.package, str(path) if path else f"[yellow]{m.install_command}[/]", m.description)
    Console().print(table)

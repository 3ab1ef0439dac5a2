"""``klaviyo-bridge workflow run FILE.dig``: run the seed's workflow examples as written."""

from __future__ import annotations

import click

from ..home import Home
from ..store.warehouse import open_warehouse
from ..workflows import run_workflow

WAREHOUSE_HELP = "Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb)."


@click.group("workflow")
def workflow_command() -> None:
    """Run workflow (.dig) files: td> query tasks that export their results to Klaviyo."""


@workflow_command.command("run")
@click.argument("dig_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Set a variable before _export (dotted keys: td.database=klaviyo_db).")
@click.option("--dry-run", is_flag=True, help="Validate every task and show counts and sample payloads; send nothing.")
@click.pass_obj
def run_command(home: Home, dig_file: str, warehouse_url: str | None, params: tuple[str, ...], dry_run: bool) -> None:
    """Run DIG_FILE's +tasks in order (td>: query.sql, database, result_connection, result_settings)."""
    variables: dict = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        node = variables
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    warn = lambda text: click.echo(f"warning: {text}", err=True)  # noqa: E731
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        run_workflow(dig_file, wh, params=variables, credentials_path=home.credentials, dry_run=dry_run,
                     warn=warn, echo=click.echo)

"""``klaviyo-bridge query``: run SQL on the warehouse and export the result to Klaviyo."""

from __future__ import annotations

import sys

import click

from ..errors import ExportFailed
from ..exports.job import export_query, report_lines
from ..exports.settings import load_result_settings, read_sql
from ..home import Home
from ..store.factory import open_warehouse
from .hints import next_step
from .progress import ExportProgress

WAREHOUSE_HELP = "Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb)."


@click.command("query")
@click.argument("query", required=False)
@click.option("-f", "--file", "query_file", type=click.Path(exists=True, dir_okay=False), help="Read the SQL from a file.")
@click.option("-d", "--database", help="Database (schema) the query's unqualified table names refer to.")
@click.option(
    "--result-settings",
    "result_settings",
    required=True,
    help="Export settings: a YAML/JSON file with the seed's keys, or inline JSON (which may not carry the key).",
)
@click.option("--result-connection", "connection", help="Saved authentication to use (auth:create NAME).")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@click.option("--dry-run", is_flag=True, help="Validate and show counts and sample payloads; send nothing.")
@click.option("--resume", "resume", metavar="RUN_ID", help="Continue a run that died; batches Klaviyo accepted are not resent.")
@click.pass_obj
def query_command(
    home: Home,
    query: str | None,
    query_file: str | None,
    database: str | None,
    result_settings: str,
    connection: str | None,
    warehouse_url: str | None,
    dry_run: bool,
    resume: str | None,
) -> None:
    """Run QUERY on the warehouse and export the result to Klaviyo (add / remove_profiles / batch_consent).

    \b
    klaviyo-bridge query -d klaviyo_db --result-settings export.yml "SELECT email, first_name FROM customers"
    klaviyo-bridge query -d klaviyo_db -f export_data.sql --result-settings '{"operation": "remove_profiles", ...}'
    """
    sql = read_sql(query, query_file)
    warn = lambda text: click.echo(f"warning: {text}", err=True)  # noqa: E731
    settings = load_result_settings(
        result_settings, connection=connection, credentials_path=home.credentials, warn=warn, env_key=True
    )
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        try:
            with ExportProgress(f"export ({settings.operation})") as progress:  # cleared before the summary
                result = export_query(wh, sql, settings, database=database, dry_run=dry_run, resume=resume, progress=progress)
        except ExportFailed as failed:
            if failed.result is not None:
                for line in report_lines(failed.result, settings):
                    click.echo(line)
            raise
    for line in report_lines(result, settings):
        click.echo(line)

    if dry_run:
        next_step("send it: the same command without --dry-run")
    else:
        next_step(
            f"each row's outcome: klaviyo-bridge job:show {result.run_id} (rows in _bridge.export_rows)",
            'run it on a schedule: klaviyo-bridge sched:create NAME CRON -d DATABASE --result-settings FILE "SELECT ..."',
        )
    if result.exit_code:
        sys.exit(result.exit_code)  # 3: rows were rejected or unconfirmed (docs/exports.md: exit codes)


COMMANDS = (query_command,)

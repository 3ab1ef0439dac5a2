"""``klaviyo-bridge console``: the web console (see ``klaviyo_bridge.console``). Only parses and starts it."""

from __future__ import annotations

import click

from ..home import Home


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs an access token (--token or the env variable).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", envvar="KLAVIYO_BRIDGE_CONSOLE_TOKEN", show_envvar=True,
              help="Access token every request must carry (16+ characters); prefer the env variable.")
@click.option("--warehouse", "warehouse_url", help="Warehouse: a DuckDB path, duckdb:///path or postgresql://... "
              "(default: HOME/warehouse.duckdb).")
@click.option("--base-url", envvar="KLAVIYO_BASE_URL", help="Klaviyo API base URL for the configs the console "
              "builds (an emulator, e.g. http://127.0.0.1:8765); default: the real Klaviyo.")
@click.pass_obj
def console_command(home: Home, host: str, port: int, token: str | None, warehouse_url: str | None,
                    base_url: str | None) -> None:
    """Serve the web console: authentications, import sources, exports, schedules and jobs."""
    from ..console import ConsoleConfig, check_bind, serve

    check_bind(host, token)
    click.echo(f"klaviyo-bridge console on http://{'[' + host + ']' if ':' in host else host}:{port}/ "
               "(Ctrl-C to stop)", err=True)
    serve(ConsoleConfig(home=home, warehouse_url=warehouse_url, base_url=base_url, token=token, host=host, port=port))

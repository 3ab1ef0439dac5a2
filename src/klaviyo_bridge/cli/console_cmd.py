"""``klaviyo-bridge console``: the web console (see ``klaviyo_bridge.console``). Only parses and starts it."""

from __future__ import annotations

import stat
from pathlib import Path

import click

from ..errors import ConfigError
from ..home import Home
from ..memory import use_lean_arrow_pool


def _read_token_file(path: str) -> str:
    p = Path(path).expanduser()
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
        token = p.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the console token file {path}: {exc.strerror}", key="token_file") from None
    if mode & 0o077:
        raise ConfigError(
            f"the console token file {path} can be read by other users (mode {mode:04o}); run 'chmod 600 {path}'",
            key="token_file",
        )
    if not token:
        raise ConfigError(f"the console token file {path} is empty", key="token_file")
    return token


@click.command("console")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback needs a token you chose (env variable or --token-file).",
)
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the access token (mode 0600). Default: a random token, printed once as a URL that logs in.",
)
@click.option(
    "--token",
    envvar="KLAVIYO_BRIDGE_CONSOLE_TOKEN",
    show_envvar=True,
    help="Access token (16+ characters). Prefer the env variable or --token-file: a command-line "
    "argument is visible to other users in `ps`.",
)
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate (PEM); needs --tls-key."
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key (PEM).")
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="Behind a reverse proxy: trust X-Forwarded-For/-Proto from --trusted-proxy addresses "
    "(the session cookie is then Secure when the original request was https).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    default=("127.0.0.1", "::1"),
    show_default=True,
    help="Address of a reverse proxy whose X-Forwarded-* headers are believed (repeatable).",
)
@click.option(
    "--query-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds a query typed in the console may run (DuckDB: interrupted; PostgreSQL: statement_timeout).",
)
@click.option(
    "--warehouse",
    "warehouse_url",
    help="Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb).",
)
@click.option(
    "--base-url",
    envvar="KLAVIYO_BASE_URL",
    help="Klaviyo API base URL for the configs the console "
    "builds (an emulator, e.g. http://127.0.0.1:8765); default: the real Klaviyo.",
)
@click.pass_obj
def console_command(
    home: Home,
    host: str,
    port: int,
    token_file: str | None,
    token: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    proxy_headers: bool,
    trusted_proxies: tuple[str, ...],
    query_timeout: float,
    warehouse_url: str | None,
    base_url: str | None,
) -> None:
    """Serve the web console: authentications, import sources, exports, schedules and jobs.

    A login is always required, also on 127.0.0.1: the console prints once a URL that logs in.
    Queries typed in the console run read-only and sandboxed; the CLI keeps full power.
    See docs/console.md for TLS and reverse-proxy setups.
    """
    # Deferred (tests/test_layers.py ALLOWED): the web stack loads for this verb only.
    from ..console import ConsoleConfig, check_bind
    from ..console.server import create_app, listen, serve_app

    use_lean_arrow_pool()  # the console runs imports and exports in this process (memory.py)
    if token_file:
        token = _read_token_file(token_file)
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together", key="tls_cert")
    check_bind(host, token)
    config = ConsoleConfig(
        home=home,
        warehouse_url=warehouse_url,
        base_url=base_url,
        token=token,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        proxy_headers=proxy_headers,
        trusted_proxies=tuple(trusted_proxies),
        query_timeout=query_timeout,
    )
    sock = listen(config)  # bound first: with --port 0 the URLs below carry the port the system chose
    app = create_app(config)
    console = app.state.console
    scheme = "https" if tls_cert else "http"
    click.echo(
        f"klaviyo-bridge console on {scheme}://{'[' + host + ']' if ':' in host else host}:{config.port}/ (Ctrl-C to stop)",
        err=True,
    )
    if token:
        click.echo("sign in with the access token you set", err=True)
    else:
        # printed once, like Jupyter: the URL logs in and the token then leaves the address bar
        click.echo(f"open this URL to sign in: {console.login_url}", err=True)
    if host not in ("127.0.0.1", "::1", "localhost") and not tls_cert and not proxy_headers:
        click.echo(
            "warning: serving plain HTTP beyond this machine: the token and the session cookie cross the "
            "network unencrypted; use --tls-cert/--tls-key or a TLS reverse proxy (docs/console.md)",
            err=True,
        )
    serve_app(app, config, sock)


COMMANDS = (console_command,)

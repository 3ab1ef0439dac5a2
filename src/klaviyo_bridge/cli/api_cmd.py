"""``klaviyo-bridge api``: read any collection or resource through the client, as JSON lines."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import click
import orjson

from klaviyo_spec import operation

from ..api.client import KlaviyoClient
from ..api.query import Query
from ..api.settings import API_KEY_ENV, ClientSettings
from ..errors import ConfigError
from ..home import Home
from ..secrets import ApiKey, CredentialStore


def _pairs(values: tuple[str, ...], what: str) -> dict[str, Sequence[str]]:
    out: dict[str, Sequence[str]] = {}
    for text in values:
        rtype, sep, names = text.partition("=")
        if not sep or not names:
            raise ConfigError(f"{what} must look like TYPE=a,b (got {text!r})", key=what)
        out[rtype] = names.split(",")
    return out


@click.command("api")
@click.argument("operation_id")
@click.option("--id", "resource_id", help="Resource id for single-resource operations (e.g. get_list).")
@click.option("--filter", "filter_expr", help="Klaviyo filter expression, e.g. \"equals(name,'VIP')\".")
@click.option("--sort", help="Sort key allowed by the operation, e.g. -updated.")
@click.option("--page-size", type=int, help="page[size]; the spec's maximum for the operation applies.")
@click.option("--fields", "fields", multiple=True, help="Sparse fieldset TYPE=a,b (repeatable).")
@click.option("--additional-fields", "additional", multiple=True, help="TYPE=a,b (repeatable).")
@click.option("--include", help="Related resources to include, comma-separated.")
@click.option("--limit", type=int, default=None, help="Stop after this many records.")
@click.option("--base-url", envvar="KLAVIYO_BASE_URL", help="API base URL (env KLAVIYO_BASE_URL).")
@click.option("--revision", help="API revision YYYY-MM-DD (default: the spec's).")
@click.option(
    "--auth", "auth", metavar="NAME", help="Use the saved authentication NAME (auth:create) instead of KLAVIYO_API_KEY."
)
@click.pass_obj
def api_command(
    home: Home,
    operation_id: str,
    resource_id: str | None,
    filter_expr: str | None,
    sort: str | None,
    page_size: int | None,
    fields: tuple[str, ...],
    additional: tuple[str, ...],
    include: str | None,
    limit: int | None,
    base_url: str | None,
    revision: str | None,
    auth: str | None,
) -> None:
    """Print the records of OPERATION_ID (e.g. get_lists, get_profiles) as JSON lines.

    The API key is a saved authentication (--auth NAME) or the environment variable
    KLAVIYO_API_KEY, never the command line. Pages are followed until the end or --limit.
    """
    key: ApiKey | str | None
    if auth:
        key = CredentialStore(home.credentials).get(auth)
    else:
        key = os.environ.get(API_KEY_ENV)
    if not key:
        raise ConfigError(
            f"set {API_KEY_ENV} to the private API key, or give --auth NAME of a saved "
            "authentication (auth:create NAME); a key is not accepted on the command line"
        )
    try:
        op = operation(operation_id)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), key="operation_id") from None
    settings: dict[str, Any] = {"api_key": key}
    if base_url:
        settings["base_url"] = base_url
    if revision:
        settings["revision"] = revision
    query = Query(
        sort=sort,
        page_size=page_size,
        fields=_pairs(fields, "fields"),
        additional_fields=_pairs(additional, "additional-fields"),
        include=include.split(",") if include else (),
        extra={"filter": filter_expr} if filter_expr else {},
    )
    asyncio.run(_print_records(ClientSettings.from_mapping(settings), op.operation_id, resource_id, query, limit))


def is_collection(operation_id: str) -> bool:
    """Collection operations answer with a list under ``data`` and may page."""
    return "Collection" in (operation(operation_id).response_schema or "")


async def _print_records(
    settings: ClientSettings, operation_id: str, resource_id: str | None, query: Query, limit: int | None
) -> None:
    out = sys.stdout.buffer
    op = operation(operation_id)
    path_params: dict[str, str] = {}
    if "id" in op.path_params:
        if resource_id is None:
            raise ConfigError(f"{operation_id} needs --id", key="id")
        path_params["id"] = resource_id
    async with KlaviyoClient(settings) as client:
        if not is_collection(operation_id):
            doc = await client.request(operation_id, path_params=path_params, query=query)
            out.write(orjson.dumps(doc) + b"\n")
            return
        count = 0
        async for record in client.records(operation_id, query=query, path_params=path_params):
            out.write(orjson.dumps(record) + b"\n")
            count += 1
            if limit is not None and count >= limit:
                break


COMMANDS = (api_command,)

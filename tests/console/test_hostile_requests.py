"""Hostile requests to the console (part of the hostile corpus): oversized forms, too many fields,
missing or forged CSRF tokens, bad paths, hostile query strings and headers. Each case gets a
clear 4xx (never a 500, never a reflected script, never a file outside the console's own), within
a bounded time (``asyncio.wait_for``), and what was saved before is still there afterwards.

Through the ``client`` fixture of this folder's conftest (the console over HTTP, in-process), so
the cases follow whatever login that fixture performs."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import API_KEY

CASE_TIMEOUT = 30
SCRIPT = "<script>alert(1)</script>"


async def _saved_auth(client) -> None:
    """Something committed before the hostile request: a saved authentication."""
    r = await client.submit("/authentications", {"name": "keep_me", "api_key": API_KEY})
    assert r.status_code in (200, 303), r.text[:500]


async def _still_saved(client) -> None:
    page = await client.page("/authentications")
    assert page.status_code == 200 and "keep_me" in page.text


def _no_500(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert "Traceback" not in r.text
    if "html" in r.headers.get("content-type", ""):  # JSON answers are data (served with nosniff)
        assert SCRIPT not in r.text, "a hostile value came back unescaped"
    assert API_KEY not in r.text


async def _get(client, path, **kw):
    return await asyncio.wait_for(client.get(path, **kw), CASE_TIMEOUT)


async def _post(client, path, **kw):
    return await asyncio.wait_for(client.post(path, **kw), CASE_TIMEOUT)


GETS = {
    "path_traversal_static": "/static/../../../../etc/passwd",
    "path_traversal_encoded": "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "path_traversal_credentials": "/static/..%2f..%2fcredentials.json",
    "script_in_job_id": f"/jobs/{SCRIPT}",
    "script_in_schedule_name": f"/schedules/{SCRIPT}",
    "script_in_query_string": f"/jobs?status={SCRIPT}&schedule={SCRIPT}",
    "bad_utf8_in_query": "/jobs?status=%ff%fe%00",
    "null_byte_in_path": "/jobs/abc%00def",
    "very_long_path": "/jobs/" + "a" * 20000,
    "very_long_query": "/jobs?schedule=" + "b" * 60000,
    "cron_preview_garbage": "/api/cron/next?cron=" + "*%20" * 5000,
    "cron_preview_script": f"/api/cron/next?cron={SCRIPT}&timezone={SCRIPT}",
    "rows_csv_unknown_job": "/jobs/ffffffffffffffffffffffffffffffff/rows.csv",
    "progress_of_unknown_job": "/jobs/ffffffffffffffffffffffffffffffff/progress.json",
    "flash_key_garbage": f"/authentications?flash={SCRIPT}",
    "sources_new_hostile_prefill": f"/sources/new?data_source={SCRIPT}&name={SCRIPT}",
    "repeated_query_parameters": "/jobs?" + "&".join(["status=error"] * 5000),
}


@pytest.mark.parametrize("case", sorted(GETS))
async def test_hostile_get_is_a_clear_4xx_or_a_safe_page(client, case):
    await _saved_auth(client)
    r = await _get(client, GETS[case])
    _no_500(r)
    assert "root:" not in r.text and '"credentials"' not in r.text  # no file outside the console's static folder
    await _still_saved(client)


async def test_post_without_csrf_is_refused_and_changes_nothing(client):
    await _saved_auth(client)
    r = await _post(client, "/authentications/keep_me/delete", data={})
    assert r.status_code == 403
    await _still_saved(client)


async def test_post_with_a_forged_csrf_is_refused_and_changes_nothing(client):
    await _saved_auth(client)
    r = await _post(client, "/authentications/keep_me/delete", data={"csrf_token": "forged" * 10})
    assert r.status_code == 403
    await _still_saved(client)


async def test_post_with_a_file_as_the_csrf_field_is_refused_and_changes_nothing(client):
    """A multipart upload under the token's name is no token (it once reached hmac: a 500)."""
    await _saved_auth(client)
    r = await _post(client, "/authentications/keep_me/delete", files={"csrf_token": ("token.txt", b"x" * 40)})
    _no_500(r)
    assert r.status_code == 403
    await _still_saved(client)


async def test_post_with_csrf_from_another_site_origin_is_refused(client):
    await _saved_auth(client)
    r = await asyncio.wait_for(
        client.submit("/authentications/keep_me/delete", {}, headers={"Origin": "http://evil.example"}), CASE_TIMEOUT
    )
    assert r.status_code == 403
    await _still_saved(client)


async def test_hostile_host_header_is_refused(client):
    r = await _get(client, "/", headers={"Host": "evil.example"})
    assert r.status_code in (400, 403, 421), r.status_code


FORMS = {
    # id: (path, form fields)
    "auth_name_script": ("/authentications", {"name": SCRIPT, "api_key": API_KEY}),
    "auth_name_path": ("/authentications", {"name": "../../etc/passwd", "api_key": API_KEY}),
    "auth_key_with_newline": ("/authentications", {"name": "nl", "api_key": API_KEY + "\r\nX-Injected: 1"}),
    "auth_key_1mb": ("/authentications", {"name": "big", "api_key": "pk_" + "a" * (1 << 20)}),
    "export_sql_1mb": (
        "/exports",
        {
            "connection": "keep_me",
            "database": "klaviyo",
            "operation": "add",
            "list_identify_type": "name",
            "list_value": "x",
            "sql": "SELECT 1 --" + "x" * (1 << 20),
        },
    ),
    "export_sql_script": ("/exports", {"connection": "keep_me", "database": SCRIPT, "operation": SCRIPT, "sql": SCRIPT}),
    "export_unknown_connection": (
        "/exports",
        {
            "connection": "nope",
            "database": "klaviyo",
            "operation": "add",
            "list_identify_type": "name",
            "list_value": "x",
            "sql": "SELECT 1",
        },
    ),
    "source_hostile_values": (
        "/sources/new",
        {"name": SCRIPT, "connection": "keep_me", "data_source": SCRIPT, "database": SCRIPT, "table": SCRIPT, "cron": SCRIPT},
    ),
    "schedule_update_unknown": (f"/schedules/{SCRIPT}/update", {"cron": SCRIPT}),
    "job_cancel_unknown": ("/jobs/ffffffffffffffffffffffffffffffff/cancel", {}),
    "many_fields": ("/authentications", {f"f{i}": "x" for i in range(20000)}),
}


@pytest.mark.parametrize("case", sorted(FORMS))
async def test_hostile_form_is_a_clear_answer_and_loses_nothing(client, case):
    await _saved_auth(client)
    path, fields = FORMS[case]
    r = await asyncio.wait_for(client.submit(path, fields), CASE_TIMEOUT)
    _no_500(r)
    await _still_saved(client)
    listing = await client.page("/authentications")
    assert "etc/passwd" not in listing.text or "../../etc/passwd" not in listing.text.split("keep_me")[0]


async def test_an_oversized_body_is_refused(client):
    await _saved_auth(client)
    r = await _post(
        client,
        "/authentications",
        content=b"name=" + b"x" * (32 << 20),
        headers={"Content-Type": "application/x-www-form-urlencoded", "x-csrf-token": client.csrf or ""},
    )
    _no_500(r)
    assert r.status_code == 413, r.status_code
    await _still_saved(client)


async def test_an_oversized_body_without_a_length_is_refused_before_it_is_read_whole(client):
    """A chunked body (no Content-Length) is judged by the bytes received: the console stops
    reading once a form's limit is passed, instead of holding the whole body first."""
    await _saved_auth(client)
    body = _Offered(megabytes=64)
    r = await _post(
        client,
        "/login",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "x-csrf-token": client.csrf or ""},
    )
    _no_500(r)
    assert r.status_code == 413, r.status_code
    assert body.sent < 16, f"{body.sent} MB read before the refusal"
    await _still_saved(client)


async def test_a_cross_site_post_is_refused_before_its_body_is_read(client):
    await _saved_auth(client)
    body = _Offered(megabytes=8)
    r = await _post(
        client,
        "/authentications/keep_me/delete",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert body.sent <= 1, f"{body.sent} MB read before the refusal"
    await _still_saved(client)


class _Offered:
    """A streamed body (no Content-Length) of ``megabytes`` MB, 1 MB a chunk; ``sent``: chunks taken."""

    def __init__(self, megabytes: int) -> None:
        self.megabytes, self.sent = megabytes, 0

    async def __aiter__(self):
        for _ in range(self.megabytes):
            self.sent += 1
            yield b"x" * (1 << 20)


async def test_a_json_body_on_a_form_endpoint_is_refused(client):
    await _saved_auth(client)
    r = await _post(
        client, "/authentications/keep_me/delete", json={"csrf_token": client.csrf}, headers={"x-csrf-token": "wrong"}
    )
    _no_500(r)
    assert r.status_code in (400, 403, 415)
    await _still_saved(client)


def test_the_console_corpus_is_large_enough():
    assert len(GETS) + len(FORMS) + 8 >= 30

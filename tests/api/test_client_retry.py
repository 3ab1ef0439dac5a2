"""Retry decisions: every retryable failure is retried with backoff; other 4xx never are."""

import httpx
import pytest

from klaviyo_bridge.errors import (
    AuthError,
    Conflict,
    InvalidRequest,
    NotFound,
    RetriesExhausted,
    TransportError,
)

from .scripted import KEY, Script, Sleeps, client_for, ok, status


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504, 524])
async def test_retryable_statuses_are_retried(code):
    script = Script(status(code), ok())
    sleeps = Sleeps()
    async with client_for(script, sleeps) as client:
        doc = await client.request("get_lists")
    assert doc["data"] == []
    assert len(script.requests) == 2
    assert len(sleeps.calls) == 1


@pytest.mark.parametrize(
    "code, error",
    [(400, InvalidRequest), (401, AuthError), (403, AuthError), (404, NotFound), (409, Conflict), (422, InvalidRequest)],
)
async def test_other_client_errors_fail_at_once(code, error):
    script = Script(status(code, detail="nope"), ok())
    async with client_for(script) as client:
        with pytest.raises(error) as info:
            await client.request("get_lists")
    assert len(script.requests) == 1
    assert info.value.status == code and info.value.detail == "nope" and info.value.code == f"e{code}"


async def test_401_says_the_key_was_rejected():
    async with client_for(Script(status(401, detail="Incorrect authentication credentials."))) as client:
        with pytest.raises(AuthError, match="the API key was rejected"):
            await client.request("get_accounts")


async def test_retry_after_header_is_honoured():
    sleeps = Sleeps()
    script = Script(status(429, headers={"Retry-After": "17"}), ok())
    async with client_for(script, sleeps, initial_retry_wait=1) as client:
        await client.request("get_profiles")
    assert 17 <= sleeps.calls[0] < 17.5


async def test_retry_after_falls_back_to_the_detail_text():
    sleeps = Sleeps()
    throttled = status(429, detail="Request was throttled. Expected available in 9 seconds.")
    async with client_for(Script(throttled, ok()), sleeps) as client:
        await client.request("get_profiles")
    assert 9 <= sleeps.calls[0] < 9.5


async def test_backoff_grows_exponentially_and_is_capped():
    sleeps = Sleeps()
    script = Script(*[status(503)] * 7, ok())
    async with client_for(script, sleeps, retry_limit=7, initial_retry_wait=10, max_retry_wait=30) as client:
        await client.request("get_lists")
    # ceilings 10, 20, 30, 30...: each wait lies in [ceiling/2, ceiling]
    for wait, ceiling in zip(sleeps.calls, [10, 20, 30, 30, 30, 30, 30]):
        assert ceiling / 2 <= wait <= ceiling


async def test_gives_up_after_retry_limit_with_a_clear_message():
    script = Script(status(503))
    sleeps = Sleeps()
    async with client_for(script, sleeps, retry_limit=2) as client:
        with pytest.raises(RetriesExhausted, match="after 3 attempts") as info:
            await client.request("get_lists")
    assert len(script.requests) == 3 and len(sleeps.calls) == 2
    assert info.value.attempts == 3 and info.value.last_error.status == 503


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset")],
)
async def test_connection_errors_and_timeouts_are_retried(failure):
    script = Script(failure, ok())
    async with client_for(script) as client:
        assert (await client.request("get_lists"))["data"] == []
    assert len(script.requests) == 2


async def test_truncated_body_is_retried():
    script = Script(httpx.Response(200, content=b'{"data": [{"type": "list", "id'), ok())
    async with client_for(script) as client:
        assert (await client.request("get_lists"))["data"] == []


async def test_truncated_body_gives_up_as_transport_error():
    script = Script(httpx.Response(200, content=b'{"data": ['))
    async with client_for(script, retry_limit=1) as client:
        with pytest.raises(RetriesExhausted) as info:
            await client.request("get_lists")
    assert isinstance(info.value.last_error, TransportError)


async def test_error_pointer_is_carried():
    from .scripted import error_body

    reply = httpx.Response(400, content=error_body(400, "invalid", "bad email", pointer="/data/attributes/email"))
    async with client_for(Script(reply)) as client:
        with pytest.raises(InvalidRequest) as info:
            await client.request("get_lists")
    assert info.value.pointer == "/data/attributes/email"
    assert "/data/attributes/email" in str(info.value)


async def test_headers_carry_key_revision_and_json_api():
    script = Script(ok())
    async with client_for(script, revision="2023-02-22") as client:
        await client.request("get_lists")
    sent = script.requests[0].headers
    assert sent["Authorization"] == f"Klaviyo-API-Key {KEY}"
    assert sent["revision"] == "2023-02-22"
    assert sent["Accept"] == "application/vnd.api+json"


async def test_writes_that_may_have_been_applied_are_not_retried_when_asked():
    from klaviyo_bridge.errors import ServerError

    for failure in (status(503), httpx.ReadTimeout("slow")):
        script = Script(failure, ok())
        async with client_for(script) as client:
            with pytest.raises((ServerError, TransportError)):
                await client.request("get_lists", retry_lost=False)
        assert len(script.requests) == 1
    script = Script(status(429, headers={"Retry-After": "1"}), ok())  # a 429 was not applied: retried
    async with client_for(script) as client:
        await client.request("get_lists", retry_lost=False)
    assert len(script.requests) == 2

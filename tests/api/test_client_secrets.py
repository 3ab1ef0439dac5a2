"""The API key never shows up in logs, exception text or reprs, whatever goes wrong."""

import logging

import httpx
import pytest

from klaviyo_bridge.errors import BridgeError

from .scripted import KEY, Script, client_for, ok, status


@pytest.mark.parametrize(
    "reply",
    [
        status(401, detail=f"Bad key {KEY}"),  # even a server that echoes the key
        status(400, detail="invalid filter"),
        status(503),
        httpx.ConnectError(f"could not connect using {KEY}"),
        httpx.Response(200, content=b"{not json"),
    ],
)
async def test_key_absent_from_logs_and_errors(reply, caplog):
    caplog.set_level(logging.DEBUG)
    async with client_for(Script(reply), retry_limit=1) as client:
        with pytest.raises(BridgeError) as info:
            await client.request("get_lists")
        text = " ".join([str(info.value), repr(info.value), repr(client), repr(client.settings)])
        cause = info.value.__cause__
        while cause is not None:
            text += " " + str(cause) + " " + repr(cause)
            cause = cause.__cause__
    assert KEY not in text
    assert KEY not in caplog.text


async def test_key_absent_from_successful_request_logs(caplog):
    caplog.set_level(logging.DEBUG)
    async with client_for(Script(ok())) as client:
        await client.request("get_lists")
    assert KEY not in caplog.text


async def test_next_link_to_another_host_is_refused():
    doc = {"data": [], "links": {"next": "https://evil.example/api/lists?page[cursor]=x"}}
    script = Script(ok(doc))
    async with client_for(script) as client:
        with pytest.raises(BridgeError, match="another host"):
            async for _ in client.pages("get_lists"):
                pass
    assert len(script.requests) == 1

"""CPU cost of the emulator ingesting bulk profile imports, in-process.

    python benchmarks/emulator_ingest.py [--bodies 10] [--profiles 10000] [--updates]

Builds an emulator app (profiles=1000, events=1000, no rate limits, a fake clock),
posts ``--bodies`` bulk import bodies shaped like ``export_profiles.py``'s (email,
first_name, last_name (every 10th left out), phone_number +4420..., properties
{tier, points}, one list), then drives each job to completion by moving the clock.
Prints CPU seconds (time.process_time) per 10,000 profiles for request handling
(the ASGI call: decode, validation, checks, 202), the job's apply, and both.
``--updates`` sends every body twice (the second time every profile matches).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

import orjson

from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings
from klaviyo_spec import spec_revision


def body(start: int, n: int, list_id: str) -> bytes:
    profiles = []
    for i in range(start, start + n):
        attrs = {"email": f"user{i}@example.com", "first_name": f"First{i % 997}"}
        if i % 10:
            attrs["last_name"] = f"Last{i % 4999}"
        attrs["phone_number"] = (
            f"+4420{30000000 + (i * 7919) % 30000000 + (30000000 if (i * 7919) % 30000000 >= 10000000 else 0)}"
        )
        attrs["properties"] = {"tier": ("gold", "silver", "bronze")[i % 3], "points": i % 5000}
        profiles.append({"type": "profile", "attributes": attrs})
    return orjson.dumps(
        {
            "data": {
                "type": "profile-bulk-import-job",
                "attributes": {"profiles": {"data": profiles}},
                "relationships": {"lists": {"data": [{"type": "list", "id": list_id}]}},
            }
        }
    )


async def call(app, method: str, path: str, raw: bytes = b"") -> tuple[int, bytes]:
    headers = [
        (b"authorization", f"Klaviyo-API-Key {DEFAULT_API_KEY}".encode()),
        (b"revision", spec_revision().encode()),
        (b"content-type", b"application/vnd.api+json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "server": ("127.0.0.1", 8765),
        "client": ("127.0.0.1", 1),
    }
    sent = False
    out: dict = {"body": b""}

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["body"]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", type=int, default=10)
    ap.add_argument("--profiles", type=int, default=10_000, help="profiles per body")
    ap.add_argument("--updates", action="store_true", help="send every body a second time (all matches)")
    ap.add_argument("--freeze", action="store_true", help="gc.freeze() after building the app")
    args = ap.parse_args()

    now = [0.0]
    app = create_app(
        EmulatorSettings(profiles=1000, events=1000, rate_limits=False, job_queued_seconds=0.0), clock=lambda: now[0]
    )
    emulator = app.state.emulator
    status, raw = await call(app, "GET", "/api/lists/")
    list_id = orjson.loads(raw)["data"][0]["id"]
    if args.freeze:
        gc.collect()
        gc.freeze()
    bodies = [body(k * args.profiles, args.profiles, list_id) for k in range(args.bodies)]
    if args.updates:
        bodies = bodies + bodies
    handle = apply = 0.0
    for raw in bodies:
        t0 = time.process_time()
        status, out = await call(app, "POST", "/api/profile-bulk-import-jobs/", raw)
        t1 = time.process_time()
        assert status == 202, (status, out[:500])
        now[0] += 3600.0
        emulator.advance()
        t2 = time.process_time()
        handle += t1 - t0
        apply += t2 - t1
    per = 10_000 / (len(bodies) * args.profiles)
    total_profiles = emulator.state.count
    print(
        f"{len(bodies)} bodies x {args.profiles:,} profiles ({total_profiles:,} profiles in the account); "
        f"CPU s per 10,000 profiles: request {handle * per:.4f}  apply {apply * per:.4f}  total {(handle + apply) * per:.4f}"
    )


if __name__ == "__main__":
    asyncio.run(main())

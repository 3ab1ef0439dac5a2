"""Request bodies for the write endpoints, and an app on a fake clock."""

from __future__ import annotations

import httpx

from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from ..fakes import FakeClock  # noqa: F401 - the shared fake clock, re-exported for the emulator tests
from .conftest import HEADERS


def make_app(clock: FakeClock | None = None, **overrides):
    settings = dict(seed=5, profiles=300, events=300, lists=3, segments=2, rate_limits=False)
    settings.update(overrides)
    return create_app(EmulatorSettings(**settings), clock=clock or FakeClock())


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator.test", headers=HEADERS)


def profile(email=None, **attrs) -> dict:
    a = dict(attrs)
    if email is not None:
        a["email"] = email
    return {"type": "profile", "attributes": a}


def import_body(profiles: list[dict], list_id: str | None = None) -> dict:
    data: dict = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
    if list_id:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return {"data": data}


def list_body(name: str) -> dict:
    return {"data": {"type": "list", "attributes": {"name": name}}}


def ids_body(ids: list[str]) -> dict:
    return {"data": [{"type": "profile", "id": i} for i in ids]}


def subscribe_body(profiles: list[dict], list_id: str | None = None, historical: bool | None = None) -> dict:
    attrs: dict = {"profiles": {"data": profiles}}
    if historical is not None:
        attrs["historical_import"] = historical
    data: dict = {"type": "profile-subscription-bulk-create-job", "attributes": attrs}
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def unsubscribe_body(profiles: list[dict], list_id: str | None = None) -> dict:
    data: dict = {"type": "profile-subscription-bulk-delete-job", "attributes": {"profiles": {"data": profiles}}}
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def consent_profile(email=None, phone=None, channels=("email",), consented_at=None, consent="SUBSCRIBED") -> dict:
    subs: dict = {}
    params = {"consent": consent}
    if consented_at:
        params["consented_at"] = consented_at
    for ch in channels:
        if ch == "email":
            subs["email"] = {"marketing": dict(params)}
        elif ch == "sms":
            subs.setdefault("sms", {})["marketing"] = dict(params)
        elif ch == "sms_transactional":
            subs.setdefault("sms", {})["transactional"] = dict(params)
    attrs: dict = {"subscriptions": subs}
    if email:
        attrs["email"] = email
    if phone:
        attrs["phone_number"] = phone
    return {"type": "profile", "attributes": attrs}


def suppression_body(emails: list[str] | None = None, delete: bool = False, list_id: str | None = None) -> dict:
    type_ = "profile-suppression-bulk-delete-job" if delete else "profile-suppression-bulk-create-job"
    data: dict = {"type": type_, "attributes": {}}
    if emails is not None:
        data["attributes"]["profiles"] = {"data": [{"type": "profile", "attributes": {"email": e}} for e in emails]}
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def pointers(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    return [e["source"]["pointer"] for e in response.json()["errors"]]

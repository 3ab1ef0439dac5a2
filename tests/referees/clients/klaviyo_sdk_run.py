"""Drive the official Python SDK ``klaviyo-api`` against the emulator (runs inside the SDK's venv).

    python klaviyo_sdk_run.py inventory BASE_URL            -> JSON: every API method the SDK exposes
    python klaviyo_sdk_run.py call BASE_URL PLAN.json       -> JSON: the outcome of each planned call

The key is read from $KLAVIYO_API_KEY. The SDK is used as a user would: ``KlaviyoAPI(key,
test_host=BASE_URL)`` (its documented option for another host); nothing else is changed, so it sends
its own revision header, retries as it does, and parses every answer into its own response models.
"""

import inspect
import json
import os
import re
import sys
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(__file__))
import loopback_only  # noqa: E402,F401
from klaviyo_api import KlaviyoAPI  # noqa: E402
from openapi_client.exceptions import ApiException  # noqa: E402

SKIP_SUFFIXES = ("_with_http_info", "_without_preload_content")


def client(base):
    return KlaviyoAPI(os.environ["KLAVIYO_API_KEY"], test_host=base)


def inventory(base):
    sdk = client(base)
    out = []
    for group in sorted(n for n, v in vars(KlaviyoAPI).items() if isinstance(v, property)):
        api = getattr(sdk, group)
        for name, function in inspect.getmembers(type(api), inspect.isfunction):
            if name.startswith("_") or name.endswith(SKIP_SUFFIXES):
                continue
            source = inspect.getsource(function)
            found = re.search(r"self\.(_\w+_serialize)\(", source)
            if not found:
                continue
            serializer = inspect.getsource(getattr(type(api), found.group(1)))
            method = re.search(r"method='(\w+)'", serializer).group(1)
            path = re.search(r"resource_path='([^']+)'", serializer).group(1)
            path_params = dict(re.findall(r"_path_params\['(\w+)'\] = (\w+)", serializer))
            bodies = [b for b in re.findall(r"_body_params = (\w+)", serializer) if b != "None"]
            signature = inspect.signature(function)
            required = [p for p, v in signature.parameters.items() if p != "self" and v.default is inspect.Parameter.empty]
            out.append(
                {
                    "group": group,
                    "method": name,
                    "http": method,
                    "path": path,
                    "path_params": path_params,
                    "body_param": bodies[0] if bodies else None,
                    "required": required,
                    "params": [p for p in signature.parameters if p != "self" and not p.startswith("_")],
                }
            )
    return {"revision": KlaviyoAPI._REVISION, "methods": out}


def _links(node):
    """Every URL under a "links" object of a parsed answer."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "links" and isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, str) and v.startswith("http"))
            else:
                yield from _links(value)
    elif isinstance(node, list):
        for value in node:
            yield from _links(value)


def call(base, plan):
    sdk = client(base)
    results = []
    for item in plan:
        api = getattr(sdk, item["group"])
        result = {"group": item["group"], "method": item["method"], "label": item.get("label", "")}
        try:
            answer = getattr(api, item["method"])(**item["kwargs"])
            result["status"] = "ok"
            data = None
            if answer is not None:
                data = json.loads(json.dumps(answer.to_dict() if hasattr(answer, "to_dict") else answer, default=str))
            following = ((data or {}).get("links") or {}).get("next") if item.get("follow_next") else None
            if following:
                # The SDK takes a whole next link as page_cursor only when it contains "https://"
                # (KlaviyoAPI._page_cursor_update); the emulator speaks http, so the cursor is taken
                # out of the link here, as the SDK does for Klaviyo's links.
                cursor = parse_qs(urlsplit(following).query)["page[cursor]"][0]
                answer = getattr(api, item["method"])(**{**item["kwargs"], "page_cursor": cursor})
                data = json.loads(json.dumps(answer.to_dict(), default=str))
                result["followed"] = True
            result["links"] = sorted(set(_links(data)))
            result["items"] = len(data["data"]) if isinstance(data, dict) and isinstance(data.get("data"), list) else None
        except ApiException as exc:
            result["status"] = exc.status
            result["error"] = (exc.body or str(exc))[:1500] if isinstance(exc.body, str) else str(exc)[:1500]
        except Exception as exc:  # the SDK could not build the request or parse the answer
            result["status"] = "client-error"
            result["error"] = f"{type(exc).__name__}: {exc}"[:3000]
        results.append(result)
    return results


def main():
    mode, base = sys.argv[1], sys.argv[2]
    if mode == "inventory":
        print(json.dumps(inventory(base)))
    else:
        with open(sys.argv[3]) as f:
            print(json.dumps(call(base, json.load(f))))


if __name__ == "__main__":
    main()

"""Derive what the code needs from Klaviyo's official OpenAPI spec.

The official ``stable.json`` is 3 MB and lives outside the repo; the client and
the emulator need only a slice of it: per operation the rate limits
(``x-klaviyo-ratelimit``), page-size limits, allowed filter fields/operators,
sorts, sparse fieldsets, includes, and, for the operations the emulator serves,
their response schemas converted to plain JSON Schema. This module produces
``spec_data.json`` (committed in the package) so a clean clone works without the
spec; ``tests/api/test_spec_data.py`` fails when the committed file is stale.

Run: ``python scripts/derive_spec.py [path/to/stable.json]``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, TypeAlias

#: An OpenAPI document, or a node of it, as JSON.
JSON: TypeAlias = dict[str, Any]

HTTP_METHODS = ("get", "post", "patch", "put", "delete")

#: Operations the emulator serves; their response (and request) schemas are embedded.
EMULATED_OPERATIONS = (
    "get_accounts",
    "get_account",
    "get_lists",
    "get_list",
    "get_profiles_for_list",
    "get_profiles",
    "get_profile",
    "get_segments",
    "get_segment",
    "get_profiles_for_segment",
    "get_metrics",
    "get_metric",
    "get_events",
    "get_event",
    "get_metric_for_event",
    "get_profile_for_event",
    "get_campaigns",
    "get_campaign",
    "get_templates",
    "get_template",
    "get_flows",
    "get_flow",
    # write side (and the async jobs' reads)
    "bulk_import_profiles",
    "get_bulk_import_profiles_jobs",
    "get_bulk_import_profiles_job",
    "get_errors_for_bulk_import_profiles_job",
    "get_profiles_for_bulk_import_profiles_job",
    "get_profile_ids_for_bulk_import_profiles_job",
    "get_list_for_bulk_import_profiles_job",
    "get_list_ids_for_bulk_import_profiles_job",
    "create_list",
    "bulk_suppress_profiles",
    "bulk_unsuppress_profiles",
    "create_or_update_profile",
    # reads that follow relationships (klaviyo_emulator/related.py)
    "get_lists_for_profile",
    "get_list_ids_for_profile",
    "get_segments_for_profile",
    "get_segment_ids_for_profile",
    "get_push_tokens_for_profile",
    "get_push_token_ids_for_profile",
    "get_conversations_for_profile",
    "get_conversation_ids_for_profile",
    "get_metric_id_for_event",
    "get_profile_id_for_event",
    "get_profile_ids_for_list",
    "get_profile_ids_for_segment",
    "get_tags_for_list",
    "get_tag_ids_for_list",
    "get_tags_for_segment",
    "get_tag_ids_for_segment",
    "get_flows_triggered_by_list",
    "get_ids_for_flows_triggered_by_list",
    "get_flows_triggered_by_segment",
    "get_ids_for_flows_triggered_by_segment",
    "get_flows_triggered_by_metric",
    "get_ids_for_flows_triggered_by_metric",
    "get_properties_for_metric",
    "get_property_ids_for_metric",
    "get_messages_for_campaign",
    "get_message_ids_for_campaign",
    "get_tags_for_campaign",
    "get_tag_ids_for_campaign",
    "get_campaign_message",
    "get_campaign_for_campaign_message",
    "get_campaign_id_for_campaign_message",
    "get_template_for_campaign_message",
    "get_template_id_for_campaign_message",
    "get_campaign_recipient_estimation",
    "get_actions_for_flow",
    "get_action_ids_for_flow",
    "get_tags_for_flow",
    "get_tag_ids_for_flow",
    "get_flow_action",
    "get_flow_for_flow_action",
    "get_flow_id_for_flow_action",
    "get_flow_action_messages",
    "get_message_ids_for_flow_action",
    "get_tags",
    "get_tag",
    "get_tag_group_for_tag",
    "get_tag_group_id_for_tag",
    "get_campaign_ids_for_tag",
    "get_flow_ids_for_tag",
    "get_list_ids_for_tag",
    "get_segment_ids_for_tag",
    "get_tag_groups",
    "get_tag_group",
    "get_tags_for_tag_group",
    "get_tag_ids_for_tag_group",
    # suppression jobs' reads, profile create and update
    "get_bulk_suppress_profiles_jobs",
    "get_bulk_suppress_profiles_job",
    "get_bulk_unsuppress_profiles_jobs",
    "get_bulk_unsuppress_profiles_job",
    "create_profile",
    "update_profile",
)

#: Emulated operations whose success response has no body (202/204): their request
#: schemas are embedded like the others', but they have no response schema to check.
EMULATED_BODYLESS_OPERATIONS = (
    "add_profiles_to_list",
    "remove_profiles_from_list",
    "bulk_subscribe_profiles",
    "bulk_unsubscribe_profiles",
    "request_profile_deletion",
    "create_event",
    "bulk_create_events",
)

DEFAULT_SPEC_LOCATIONS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "klaviyo-openapi" / "stable.json",)

_TIER_RE = re.compile(
    r"Rate limits when using the `([^=`]+)=([^`]+)` parameter in your API request:"
    r"\s*(?:<br>)*\s*Burst:\s*`([^`]+)`\s*(?:<br>)*\s*Steady:\s*`([^`]+)`"
)
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([smd])\s*$")
_FILTER_LINE_RE = re.compile(r"`([^`]+)`:\s*((?:`[^`]+`(?:,\s*)?)+)")


def parse_rate(text: str) -> tuple[int, str]:
    """'10/s' -> (10, 's')."""
    m = _RATE_RE.match(text)
    if not m:
        raise ValueError(f"unrecognised rate limit {text!r}")
    return int(m.group(1)), m.group(2)


def parse_ratelimit(raw: dict[str, str]) -> dict[str, int]:
    """Spec's {'burst': '10/s', 'steady': '150/m', 'daily': '150/d'} -> counts per window."""
    out: dict[str, int] = {}
    unit_for = {"burst": "s", "steady": "m", "daily": "d"}
    for key, text in raw.items():
        count, unit = parse_rate(text)
        if unit_for.get(key) != unit:
            raise ValueError(f"rate limit {key}={text!r}: unexpected unit")
        out[{"burst": "burst_per_second", "steady": "steady_per_minute", "daily": "daily"}[key]] = count
    return out


def parse_ratelimit_tiers(description: str) -> list[dict[str, Any]]:
    """Lower limits for requests with a given parameter value (the description's "Rate limits when
    using the `additional-fields[profile]=predictive_analytics` parameter ..." paragraphs)."""
    tiers = []
    for parameter, value, burst, steady in _TIER_RE.findall(description):
        tiers.append({"parameter": parameter, "value": value, **parse_ratelimit({"burst": burst, "steady": steady})})
    return tiers


def parse_filter_description(description: str) -> dict[str, list[str]]:
    """Pull 'Allowed field(s)/operator(s)' out of a filter parameter's description."""
    _, _, tail = description.partition("Allowed field(s)/operator(s):")
    allowed: dict[str, list[str]] = {}
    for segment in tail.split("<br>"):
        m = _FILTER_LINE_RE.search(segment)
        if m:
            allowed[m.group(1)] = re.findall(r"`([^`]+)`", m.group(2))
    return allowed


def filters_from_extension(typed: dict[str, Any]) -> dict[str, list[str]]:
    """``x-klaviyo-filters`` -> every field's operators (single, list and no-value forms together)."""
    out: dict[str, list[str]] = {}
    for field_name, desc in typed.items():
        ops: list[str] = []
        for form in ("single", "list", "none"):
            ops += [o for o in desc.get("operators", {}).get(form, []) if o not in ops]
        out[field_name] = sorted(ops)
    return out


def filter_type(desc: dict[str, Any]) -> dict[str, Any]:
    """One field of ``x-klaviyo-filters``: its operators per value form and its value's type."""
    value = desc.get("value") or {}
    out: dict[str, Any] = {form: list(ops) for form, ops in desc.get("operators", {}).items()}
    if value.get("type"):
        out["type"] = value["type"]
    if value.get("format"):
        out["format"] = value["format"]
    if value.get("enum"):
        out["enum"] = list(value["enum"])
    return out


def _resolve_param(spec: JSON, prm: JSON) -> JSON:
    if "$ref" in prm:
        name = prm["$ref"].rsplit("/", 1)[-1]
        resolved: JSON = spec["components"]["parameters"][name]
        return resolved
    return prm


def _response_ref(op: JSON) -> tuple[str | None, str | None]:
    for status in ("200", "201", "202", "204"):
        resp = op.get("responses", {}).get(status)
        if resp is None:
            continue
        content = resp.get("content") or {}
        for media in content.values():
            ref = media.get("schema", {}).get("$ref")
            if ref:
                return status, ref.rsplit("/", 1)[-1]
        return status, None
    return None, None


def _request_ref(op: JSON) -> str | None:
    body = op.get("requestBody") or {}
    for media in (body.get("content") or {}).values():
        ref = media.get("schema", {}).get("$ref")
        if ref:
            return str(ref.rsplit("/", 1)[-1])
    return None


def derive_operation(spec: JSON, path: str, method: str, op: JSON) -> JSON:
    """Summarise one operation: limits, paging, filters, sorts, fieldsets."""
    entry: dict[str, Any] = {
        "operation_id": op["operationId"],
        "method": method.upper(),
        "path": path,
        "ratelimit": parse_ratelimit(op.get("x-klaviyo-ratelimit", {})),
        "ratelimit_tiers": parse_ratelimit_tiers(op.get("description", "")),
        "scopes": op.get("x-klaviyo-scopes", []),
        "path_params": [],
        "fields": {},
        "additional_fields": {},
        "include": [],
        "filters": {},
        "filter_required": False,
        "sorts": [],
        "page_size": None,
    }
    for raw in op.get("parameters", []):
        prm = _resolve_param(spec, raw)
        name, where = prm["name"], prm["in"]
        schema = prm.get("schema", {})
        if where == "path":
            entry["path_params"].append(name)
        elif name.startswith("fields["):
            entry["fields"][name[7:-1]] = schema.get("items", {}).get("enum", [])
        elif name.startswith("additional-fields["):
            entry["additional_fields"][name[18:-1]] = schema.get("items", {}).get("enum", [])
        elif name == "include":
            entry["include"] = schema.get("items", {}).get("enum", [])
        elif name == "filter":
            typed = op.get("x-klaviyo-filters")
            entry["filters"] = filters_from_extension(typed) if typed else parse_filter_description(prm.get("description", ""))
            if typed:
                entry["filter_types"] = {f: filter_type(d) for f, d in typed.items()}
            entry["filter_required"] = bool(prm.get("required"))
        elif name == "sort":
            entry["sorts"] = schema.get("enum", [])
        elif name == "page[size]":
            entry["page_size"] = {
                "default": schema.get("default"),
                "minimum": schema.get("minimum", 1),
                "maximum": schema.get("maximum"),
            }
    entry["success_status"], entry["response_schema"] = _response_ref(op)
    entry["request_schema"] = _request_ref(op)
    return entry


def to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema (nullable -> null type, refs -> $defs, docs dropped)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "example", "examples", "nullable", "title", "deprecated", "xml"):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = "#/$defs/" + value.rsplit("/", 1)[-1]
        elif key in ("properties", "patternProperties"):
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        else:
            out[key] = to_json_schema(value)
    if node.get("nullable"):
        if "type" in out:
            t = out["type"]
            out["type"] = (t if isinstance(t, list) else [t]) + ["null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = list(out["enum"]) + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _collect_refs(node: Any, found: set[str], schemas: JSON) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in found:
                found.add(name)
                _collect_refs(schemas[name], found, schemas)
        for value in node.values():
            _collect_refs(value, found, schemas)
    elif isinstance(node, list):
        for value in node:
            _collect_refs(value, found, schemas)


def error_schema(spec: JSON) -> JSON:
    """JSON:API error document schema as the spec's ClientError response gives it."""
    resp = spec["components"]["responses"]["ClientError"]
    media = next(iter(resp["content"].values()))
    schema: JSON = to_json_schema(copy.deepcopy(media["schema"]))
    return schema


def derive(spec: JSON) -> dict[str, Any]:
    """The full derived document written to ``spec_data.json``."""
    operations: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            op = item.get(method)
            if op and "operationId" in op:
                operations[op["operationId"]] = derive_operation(spec, path, method, op)
    missing = [o for o in EMULATED_OPERATIONS + EMULATED_BODYLESS_OPERATIONS if o not in operations]
    if missing:
        raise ValueError(f"spec lacks emulated operations: {missing}")
    schemas = spec["components"]["schemas"]
    needed: set[str] = set()
    for op_id in EMULATED_OPERATIONS:
        name = operations[op_id]["response_schema"]
        if name:
            needed.add(name)
            _collect_refs(schemas[name], needed, schemas)
    for op_id in EMULATED_OPERATIONS + EMULATED_BODYLESS_OPERATIONS:
        name = operations[op_id]["request_schema"]
        if name:
            needed.add(name)
            _collect_refs(schemas[name], needed, schemas)
    return {
        "revision": spec["info"]["version"],
        "base_url": spec["servers"][0]["url"],
        "emulated_operations": list(EMULATED_OPERATIONS),
        "emulated_bodyless_operations": list(EMULATED_BODYLESS_OPERATIONS),
        "operations": dict(sorted(operations.items())),
        "error_schema": error_schema(spec),
        "schemas": {name: to_json_schema(schemas[name]) for name in sorted(needed)},
    }


def render(spec: JSON) -> str:
    """Canonical text of the derived file (stable key order, trailing newline)."""
    return json.dumps(derive(spec), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def find_spec(explicit: str | Path | None = None) -> Path | None:
    """Locate stable.json: an explicit path, $KLAVIYO_OPENAPI_SPEC, or ../shared next to the repo."""
    candidates = [explicit, os.environ.get("KLAVIYO_OPENAPI_SPEC"), *DEFAULT_SPEC_LOCATIONS]
    for cand in candidates:
        if cand and Path(cand).is_file():
            return Path(cand).resolve()
    return None


OUTPUT = Path(__file__).with_name("spec_data.json")

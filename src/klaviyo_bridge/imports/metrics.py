"""``metrics:`` / ``metric:`` names (or ids) -> the account's metric ids.

Names are what users see in Klaviyo; two integrations can each have a metric of the same name
("Placed Order" from Shopify and from WooCommerce), which ``"Placed Order (Shopify)"`` or
``{name: Placed Order, integration: Shopify}`` tells apart. An unknown name fails with a
did-you-mean; an ambiguous one names the integrations to choose from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..api.client import KlaviyoClient
from ..config import MetricChoice
from ..errors import ConfigError


class UnknownMetric(ConfigError):
    """The account has no metric of that name (``replicate`` skips such a table)."""


@dataclass(frozen=True)
class Metric:
    id: str
    name: str
    integration: str  # the integration's name ("Shopify"), "" if Klaviyo gave none

    def label(self) -> str:
        return f"{self.name} ({self.integration})" if self.integration else self.name


async def account_metrics(client: KlaviyoClient) -> list[Metric]:
    out = []
    async for record in client.records("get_metrics"):
        attrs = record.get("attributes") or {}
        integration = attrs.get("integration") or {}
        out.append(Metric(record["id"], attrs.get("name") or "", integration.get("name") or ""))
    return out


def _matches_integration(metric: Metric, integration: str) -> bool:
    return metric.integration.casefold() == integration.casefold()


def resolve(choices: list[MetricChoice], metrics: list[Metric], key: str = "metrics") -> list[Metric]:
    """The metrics ``choices`` name, in order, without repeats; a ConfigError names the problem."""
    chosen: dict[str, Metric] = {}
    for choice in choices:
        found = _resolve_one(choice, metrics, key)
        chosen.setdefault(found.id, found)
    return list(chosen.values())


def _resolve_one(choice: MetricChoice, metrics: list[Metric], key: str) -> Metric:
    if choice.id:
        for m in metrics:
            if m.id == choice.id:
                return m
        # an id-looking entry may well be a name: let the name rules answer it
        choice = MetricChoice(name=choice.id)
    same = [m for m in metrics if m.name == choice.name]
    if choice.integration:
        exact = [m for m in same if _matches_integration(m, choice.integration)]
        if exact:
            return exact[0]
        literal = f"{choice.name} ({choice.integration})"
        named = [m for m in metrics if m.name == literal]  # a metric whose name has parentheses
        if len(named) == 1:
            return named[0]
        if same:
            raise ConfigError(
                f"{key}: metric {choice.name!r} exists, but not from integration "
                f"{choice.integration!r}; it comes from: {', '.join(sorted(m.integration for m in same))}",
                key=key,
            )
    else:
        if len(same) == 1:
            return same[0]
        if len(same) > 1:
            options = ", ".join(f'"{m.label()}"' for m in same)
            raise ConfigError(
                f"{key}: {len(same)} metrics are named {choice.name!r}, from different integrations; "
                f"say which: {options} (or {{name: {choice.name}, integration: ...}})",
                key=key,
            )
        by_id = [m for m in metrics if m.id == choice.name]  # a plain string may be an id
        if by_id:
            return by_id[0]
        by_case = [m for m in metrics if m.name.casefold() == (choice.name or "").casefold()]
        if len(by_case) == 1:
            return by_case[0]
    labels = sorted({m.name for m in metrics} | {m.label() for m in metrics})
    close = difflib.get_close_matches(choice.label(), labels, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise UnknownMetric(
        f"{key}: metric {choice.label()!r} not found in the account{hint}; it has: "
        f"{', '.join(sorted({m.label() for m in metrics}))}",
        key=key,
    )


async def resolve_ids(client: KlaviyoClient, choices: list[MetricChoice], key: str = "metrics") -> list[Metric]:
    return resolve(choices, await account_metrics(client), key)

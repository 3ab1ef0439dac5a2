"""The one translation of pydantic's ``ValidationError`` into our error tree.

Every settings model (connection settings, import configs, export result settings) is
validated by pydantic; ``config_error_from`` turns its report into a ``ConfigError`` whose
``problems`` name each bad setting by its path (``in.list_id``, ``out.timezone``,
``list_value``), in our words, with a hint where one helps, and never echo a value (a value
may be an API key). The CLI, workflows, schedules and the console all go through it, so the
same bad input gives the same field and message wherever it is typed.
"""

from __future__ import annotations

import difflib

from pydantic import AliasChoices, BaseModel, ValidationError

from .errors import ConfigError, Problem


class KeyedValueError(ValueError):
    """A model-level check's error that belongs to one key (``incremental_field``, say):
    pydantic reports it at the section, ``config_error_from`` moves it to the key."""

    def __init__(self, key: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.hint = hint


def known_keys(model: type[BaseModel]) -> list[str]:
    """Field names and their aliases: what a config may say."""
    keys = []
    for name, info in model.model_fields.items():
        keys.append(name)
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            keys.extend(str(choice) for choice in alias.choices)
    return keys


def _range_of(model: type[BaseModel], name: str) -> tuple[float, float] | None:
    """The field's inclusive (ge, le) range, for messages that give the whole range."""
    info = model.model_fields.get(name)
    if info is None:
        return None
    ge = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
    le = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
    return (ge, le) if ge is not None and le is not None else None


def _number(value: float) -> str:
    """1, 300000, 86400000, 0.5: whole numbers in full (not 8.64e+07)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def problems_from(exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """One ``Problem`` per error in pydantic's report: field path, our message, a hint."""
    candidates = known_keys(model)
    problems: list[Problem] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = err["loc"]
        msg = err["msg"]
        hint = None
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, KeyedValueError):
            loc, msg, hint = (*loc, cause.key), str(cause), cause.hint
        elif err["type"] == "value_error" and cause is not None:
            msg = str(cause)  # our validators' own words, without pydantic's "Value error, "
        bounds = _range_of(model, str(loc[-1])) if loc else None
        if err["type"] in ("greater_than_equal", "less_than_equal") and bounds:
            msg = f"must be between {_number(bounds[0])} and {_number(bounds[1])}"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            close = difflib.get_close_matches(str(err["loc"][-1]), candidates, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
        problems.append(Problem(msg, field=".".join(str(p) for p in loc) or None, hint=hint))
    return problems


def config_error_from(exc: ValidationError, model: type[BaseModel], origin: str | None = None) -> ConfigError:
    """Turn pydantic's report into one ConfigError listing every problem (values never echoed).

    The message reads ``[origin: ]invalid settings: in.list_id: ...; out.timezone: ...``; the
    same problems are on ``problems`` for the surfaces that show them one by one."""
    problems = problems_from(exc, model)
    lines = "; ".join(f"{p.field or '(config)'}: {p.message}" for p in problems)
    prefix = f"{origin}: " if origin else ""
    first = problems[0] if problems else None
    return ConfigError(
        f"{prefix}invalid settings: {lines}",
        field=first.field if first else None,
        hint=first.hint if first else None,
        problems=problems,
    )

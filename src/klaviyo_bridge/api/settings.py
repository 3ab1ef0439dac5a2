"""Connection settings of the API client, with the seed's names, defaults and ranges.

Keys match the vendor documents so a pasted config works: ``api_token`` (alias
``api_key``), ``base_url``, ``revision`` (alias ``revision_time``), ``retry_limit``,
``initial_retry_wait``, ``max_retry_wait``, ``connection_timeout``,
``read_timeout``, ``write_timeout``. The key is a ``secrets.ApiKey``: checked for shape
(strictly, ``pk_`` + hex, when ``base_url`` is Klaviyo's), its repr and str masked, and
revealed only where the client builds the ``Authorization`` header.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..secrets import ApiKey
from ..validation import KeyedValueError, config_error_from, known_keys

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "ClientSettings", "KeyedValueError", "config_error_from", "known_keys"]
from urllib.parse import urlsplit

from klaviyo_spec import default_base_url, spec_revision

BASE_URL_ENV = "KLAVIYO_BASE_URL"
API_KEY_ENV = "KLAVIYO_API_KEY"
_REVISION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


def _env_base_url() -> str:
    return os.environ.get(BASE_URL_ENV) or default_base_url()


class ClientSettings(BaseModel):
    """Everything the HTTP client needs; validated once, with every error reported."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, validate_default=True)

    api_key: ApiKey = Field(validation_alias=AliasChoices("api_key", "api_token"))
    base_url: str = Field(default_factory=_env_base_url)
    revision: str = Field(default_factory=spec_revision, validation_alias=AliasChoices("revision", "revision_time"))
    retry_limit: int = Field(5, ge=1, le=7)
    initial_retry_wait: float = Field(1, ge=1, le=10)
    max_retry_wait: float = Field(300, ge=30, le=1800)
    connection_timeout: float = Field(300, ge=30, le=1800)
    read_timeout: float = Field(300, ge=30, le=1800)
    write_timeout: float = Field(300, ge=30, le=1800)
    max_concurrency: int = Field(16, ge=1, le=256)

    @field_validator("revision", mode="before")
    @classmethod
    def _revision_format(cls, value: Any) -> Any:
        if value is None or value == "":
            return spec_revision()
        text = str(value)
        if not _REVISION_RE.match(text):
            raise ValueError("must be a date YYYY-MM-DD (optionally with a suffix like .pre)")
        return text

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https:// and name a host")

        try:
            host = urlsplit(value).hostname or ""
            host.encode("idna")  # a label over 63 characters, an empty label, a host over 253
        except (UnicodeError, ValueError):
            raise ValueError("does not name a valid host (a name's parts are 1-63 characters, 253 in all)") from None
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("contains a control character")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _key_fits_host(self) -> "ClientSettings":
        problem = self.api_key.check_for(self.base_url)
        if problem:
            raise KeyedValueError("api_key", problem)
        return self

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "ClientSettings":
        """Validate a config mapping; raise one ConfigError listing every bad key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error_from(exc, cls) from None

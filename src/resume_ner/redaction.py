"""Credentials in URLs never leave the process: values are redacted before they are logged or written.

A URL's user information (``https://user:password@host`` -> ``https://***@host``) and secret-looking query
parameters (``?password=...``, ``token``, ``sig``, ...) are replaced by ``***``. Credentials belong in the
environment (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``) or in Kubernetes Secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["REDACTED", "has_credentials", "redact_credentials", "redact_settings"]

REDACTED = "***"

T = TypeVar("T")

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)[^\s/?#]*@", re.IGNORECASE)
_SECRET_NAMES = (
    "password",
    "passwd",
    "pwd",
    "token",
    "access_token",
    "secret",
    "client_secret",
    "sig",
    "key",
    "api_key",
    "apikey",
    "accountkey",
    "sharedaccesskey",
)
_SECRET_QUERY = re.compile(rf"(?P<name>[?&;](?:{'|'.join(_SECRET_NAMES)})=)[^&;#\s]+", re.IGNORECASE)


def redact_credentials(text: str) -> str:
    """``text`` with the user information of every URL and secret query values replaced by ``***``."""
    text = _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)
    return _SECRET_QUERY.sub(rf"\g<name>{REDACTED}", text)


def has_credentials(text: str) -> bool:
    """True when ``text`` holds a URL with user information or a secret query value."""
    return redact_credentials(text) != text


def redact_settings(value: T) -> T:
    """A copy of ``value`` (nested dicts, lists and strings, e.g. ``config.to_dict()``) with every string redacted."""
    if isinstance(value, str):
        return redact_credentials(value)  # type: ignore[return-value]
    if isinstance(value, Mapping):
        return {key: redact_settings(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        return type(value)(redact_settings(item) for item in value)
    return value

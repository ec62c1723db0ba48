"""Argument checks shared by the public calls. Each raises naming the argument."""

from __future__ import annotations

import math
import numbers
import re
from datetime import datetime, timedelta, timezone

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def count(value: object, name: str) -> int:
    """A non-negative integer (``bool`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    result = int(value)
    if result < 0:
        raise ValueError(f"{name} must be >= 0, got {result}")
    return result


def real(value: object, name: str, *, low: float = 0.0, high: float | None = None) -> float:
    """A finite real number in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}")
    if result < low or (high is not None and result > high):
        bound = f">= {low:g}" if high is None else f"in {low:g}..{high:g}"
        raise ValueError(f"{name} must be {bound}, got {result:g}")
    return result


def text(value: object, name: str, max_length: int, *, allow_empty: bool = True) -> str:
    """A string of at most ``max_length`` characters, without NUL or terminal escapes."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValueError(f"{name} is {len(value)} characters, longer than the limit {max_length}")
    if _CONTROL_EXCEPT_WHITESPACE.search(value):
        raise ValueError(f"{name} must not contain control characters")
    return value


def identifier(value: object, name: str, max_length: int) -> str:
    """A non-empty id without any control character (tabs and newlines included)."""
    result = text(value, name, max_length, allow_empty=False)
    if _CONTROL.search(result):
        raise ValueError(f"{name} must not contain control characters")
    return result


def choice(value: object, name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``, case-insensitive; returns the lower-case form."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    lowered = value.strip().lower()
    if lowered not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value[:64]!r}")
    return lowered


def moment(value: object, name: str) -> datetime | None:
    """An aware UTC datetime; a naive one is taken as local time, as ``datetime.now()`` gives."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime or None, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(timezone.utc)


def seconds(value: object, name: str) -> float | None:
    """A duration as seconds (float) or ``timedelta``, >= 0."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return real(value, name)


def rfc3339(value: datetime) -> str:
    """``2026-11-25T18:30:00.123Z``: UTC, millisecond precision."""
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"

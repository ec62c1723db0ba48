"""Argument checks shared by the public calls. Each raises naming the argument.

Two rules hold for every value that reaches the dashboard's state:

* **Numbers** must fit what a counter or gauge holds: finite after conversion to ``float``
  and at most :data:`MAX_NUMBER` (2**63) in size. Anything else raises ``ValueError``, never
  ``OverflowError``; ``int``, ``float``, ``Fraction``, ``Decimal`` and numpy scalars are
  all checked alike.
* **Lone surrogates** (``"\\udcff"``, what ``os.fsdecode(b"vm-\\xff")`` or JSON's
  ``"\\udcff"`` give) cannot be encoded as UTF-8, so one of them would fail every JSON
  message, every ``/metrics`` scrape and every tick. Free text (job name, VM name,
  provider, error, alert message) has them replaced by U+FFFD, so a job whose file name is
  odd is still shown; a surrogate pair split into two code points is joined into the
  character it encodes (:func:`clean_text`). Identifiers (a job id) are refused with
  ``ValueError`` instead: replacing could merge two distinct ids into one job.
"""

from __future__ import annotations

import math
import numbers
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")

MAX_NUMBER = 2**63
"""Largest magnitude a recorded number may have: beyond it an int64 counter overflows and a
float gauge has long stopped counting in ones."""


def has_surrogates(value: str) -> bool:
    """True when ``value`` holds a surrogate code point (it cannot be encoded as UTF-8)."""
    return not value.isascii() and _SURROGATE.search(value) is not None


def clean_text(value: str) -> str:
    """``value`` made encodable: surrogate pairs joined, lone surrogates as U+FFFD.

    >>> clean_text("vm-\\udcff"), clean_text("\\ud83d\\ude00")
    ('vm-\ufffd', '😀')

    Returns ``value`` itself (no copy) when there is nothing to replace.
    """
    if not has_surrogates(value):
        return value
    if _SURROGATE_PAIR.search(value):
        value = _SURROGATE_PAIR.sub(_join_pair, value)
    # What is left is lone. (Decoding UTF-16 with errors="replace" does the same in one
    # step, five times slower: a family of thousands of such series is cleaned each tick.)
    return _SURROGATE.sub("\ufffd", value)


def _join_pair(match: re.Match[str]) -> str:
    return match.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def count(value: object, name: str) -> int:
    """A non-negative integer below :data:`MAX_NUMBER` (``bool`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    result = int(value)
    if result < 0:
        raise ValueError(f"{name} must be >= 0, got {result}")
    if result >= MAX_NUMBER:
        raise ValueError(f"{name} must be below 2**63, got {_short(result)}")
    return result


def real(value: object, name: str, *, low: float = 0.0, high: float | None = None) -> float:
    """A finite real number in ``low..high`` (``high`` at most :data:`MAX_NUMBER`)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    limit = float(MAX_NUMBER) if high is None else min(high, float(MAX_NUMBER))
    if isinstance(value, numbers.Integral) and abs(int(value)) > MAX_NUMBER:
        raise ValueError(f"{name} must be {_range(low, limit)}, got {_short(int(value))}")
    try:
        result = float(value)
    except (ArithmeticError, ValueError):  # Fraction(10**400), Decimal("sNaN")
        raise ValueError(f"{name} must be a finite number, got {_short(value)}") from None
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}")
    if result < low or result > limit:
        raise ValueError(f"{name} must be {_range(low, limit)}, got {result:g}")
    return result + 0.0  # -0.0 is 0 (JSON would say "-0.0")


def _range(low: float, high: float) -> str:
    return f"in {low:g}..{'2**63' if high == MAX_NUMBER else format(high, 'g')}"


def _short(value: object) -> str:
    """A number for an error message: 10**400 has 401 digits nobody wants to read."""
    return clipped(str(value), limit=24, keep=12)


def clipped(text: str, length: int | None = None, *, limit: int = 64, keep: int = 48) -> str:
    """``text`` for an error message, cut short when long: an error names what was wrong,
    never sends 50 KB of it back. Up to ``limit`` characters it is whole; a longer one keeps
    its first ``keep`` and says how long it was (``length``, or its own).

    >>> clipped("/api/nothing")
    '/api/nothing'
    >>> clipped("/" + "x" * 99)
    '/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...(100 characters)'
    """
    if len(text) <= limit:
        return text
    return f"{text[:keep]}...({len(text) if length is None else length} characters)"


def quoted(value: object) -> str:
    """A value someone sent, quoted (``repr``) for an error message and :func:`clipped`;
    a string's length is its own, not its quoted form's.

    >>> quoted("job-1")
    "'job-1'"
    >>> quoted("a" * 100)
    "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...(100 characters)"
    """
    return clipped(repr(value), len(value) if isinstance(value, str) else None)


def text(value: object, name: str, max_length: int, *, allow_empty: bool = True) -> str:
    """A string of at most ``max_length`` characters, without NUL or terminal escapes.

    Lone surrogates become U+FFFD (see the module's docstring).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    value = clean_text(value)
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValueError(f"{name} is {len(value)} characters, longer than the limit {max_length}")
    if _CONTROL_EXCEPT_WHITESPACE.search(value):
        raise ValueError(f"{name} must not contain control characters")
    return value


def identifier(value: object, name: str, max_length: int) -> str:
    """A non-empty id without any control character (tabs and newlines included) or
    surrogate: two ids that differ only there would otherwise become one."""
    if isinstance(value, str) and has_surrogates(value):
        at = _SURROGATE.search(value)
        assert at is not None
        raise ValueError(
            f"{name} must be valid Unicode; it has the surrogate {at.group()!r} at index "
            f"{at.start()} (undecodable bytes? decode them with errors='replace')"
        )
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
    try:
        if value.tzinfo is None:
            value = value.astimezone()
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # datetime.max in UTC-5 is past year 9999 in UTC
        raise ValueError(f"{name} is out of range in UTC: {value!r}") from None


def seconds(value: object, name: str) -> float | None:
    """A duration as seconds (float) or ``timedelta``, >= 0."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return real(value, name)


# -- settings: the bounded integers, numbers, durations and flags of Config, the demo, the
# watch options and the command line, all worded alike ("port must be >= 0 and <= 65535").


def bound_problem(
    value: float, low: float | None = None, high: float | None = None, *,
    low_open: bool = False, unit: str = "", note: str = "", shown: str | None = None,
) -> str | None:
    """What is wrong with ``value`` against the bounds, as ``"must be > 0 s, got -1"``, or
    None when it is within them (a NaN or an infinity never is). ``shown``: the value as the
    user wrote it, for the message."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    finite = isinstance(value, int) or math.isfinite(value)
    if finite and not too_low and not too_high:
        return None
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    bound = " and ".join(parts) if parts else "finite"
    if shown is None:
        shown = _short(value) if isinstance(value, int) else repr(value)
    return f"must be {bound}{unit}{note}, got {shown}"


def integer(value: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """An ``int`` (not a ``bool``) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    problem = bound_problem(value, low, high)
    if problem:
        raise ValueError(f"{name} {problem}")
    return value


def flag(value: object, name: str) -> bool:
    """A ``bool`` (1 and "yes" are not)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def number(
    value: object, name: str, low: float | None = None, high: float | None = None, *,
    low_open: bool = False, unit: str = "", note: str = "",
) -> float:
    """A finite ``int`` or ``float`` (not a ``bool``) within the bounds, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return _bounded(value, name, low, high, low_open=low_open, unit=unit, note=note)


def duration(
    value: object, name: str, low: float | None = 0.0, high: float | None = None, *,
    low_open: bool = False, note: str = "",
) -> float:
    """Seconds, given as a number or a ``timedelta``, within the bounds; as a float."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = type(value).__name__
        raise TypeError(f"{name} must be seconds (float) or a timedelta, got {kind}")
    return _bounded(value, name, low, high, low_open=low_open, unit=" s", note=note)


def _bounded(
    value: float, name: str, low: float | None, high: float | None, *,
    low_open: bool, unit: str, note: str,
) -> float:
    try:
        result = float(value)
    except OverflowError:  # an int of hundreds of digits
        raise ValueError(f"{name} is too large, got an int of {len(str(value))} digits") from None
    problem = bound_problem(result, low, high, low_open=low_open, unit=unit, note=note,
                            shown=_short(value) if isinstance(value, int) else None)
    if problem:
        raise ValueError(f"{name} {problem}")
    return result


def rfc3339(value: datetime) -> str:
    """``2026-11-25T18:30:00.123Z``: UTC, millisecond precision."""
    utc = value.astimezone(timezone.utc)
    # Not strftime("%Y"): glibc writes year 1 as "1", not "0001".
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z")

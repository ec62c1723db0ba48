"""What the server writes to the log, and what it never writes there.

Three rules, each tested:

- **No secret reaches a log.** :class:`RedactingFilter` sits on every logger the server
  uses (ours, ``tornado.access``, ``tornado.general``, ``tornado.application``,
  ``asyncio``) while a server runs. It formats each record once and replaces the bearer
  token and the metrics token in every spelling a request can carry them (``?token=``,
  ``?tok%65n=``, percent-encoded values, ``Authorization: Bearer``/``Basic``,
  ``user:password@`` in a URL), in the message, its arguments and its traceback.
- **One record, one line.** Control characters in a message (a ``%0a`` in a path, a
  terminal escape) are written as ``\\xNN``, so a request cannot forge a log line.
- **Normal refusals are not errors.** 401, 403, 404, 421, 429, 503 (``max_clients``) and
  the rest of 4xx are INFO, and :class:`RateLimitedLog` writes at most one line per status
  per interval, with the count of the ones it held back. ERROR is for faults of the
  server itself (500s, uncaught exceptions), also rate-limited per kind.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tornado.web import HTTPError

from .security import redact_token

if TYPE_CHECKING:
    from tornado.web import RequestHandler

__all__ = [
    "ACCESS_LINE",
    "LOGGERS",
    "REDACTED",
    "RateLimitedLog",
    "RedactingFilter",
    "ServerLogs",
    "escape_controls",
    "install",
    "installed",
    "log_answered",
    "log_exception",
    "log_request",
    "redact",
    "uninstall",
]

REDACTED = "<redacted>"
LOGGERS = (
    "hyperdash_otel",
    "hyperdash_otel.access",
    "hyperdash_otel.server",
    "hyperdash_otel.cli",
    "hyperdash_otel.demo",
    "hyperdash_otel.fleet",
    "tornado.access",
    "tornado.application",
    "tornado.general",
    "asyncio",
)
"""Loggers that carry the filter while a server runs; every other ``hyperdash_otel.*``
logger that exists at that moment gets it too (a logger's filter does not apply to what its
children log, so each one needs its own)."""

REFUSAL_INTERVAL = 10.0
"""Seconds between two log lines for the same kind of refusal or fault."""
MAX_KINDS = 64
"""Kinds of refusal remembered at once by a rate-limited log; the oldest is forgotten."""

# -- redaction -------------------------------------------------------------------------------

# name=value in a query string, wherever it appears in a message. The name is decoded as
# the server decodes it before deciding whether it is the token.
_QUERY_PAIR = re.compile(r"(?P<lead>[?&])(?P<name>[^=&\s?#'\"]*)=(?P<value>[^&\s#'\"]*)")
_AUTH_VALUE = re.compile(r"(?i)\b(?P<scheme>bearer|basic)(?P<gap>\s+)(?P<value>[^\s'\",)]+)")
_USERINFO = re.compile(r"(?i)(?P<lead>[a-z][a-z0-9+.-]*://[^/\s:@'\"]*):[^@\s/'\"]*@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _char_forms(char: str) -> str:
    """A regex matching ``char`` as it may stand in a logged URI or repr: itself,
    percent-encoded (either hex case), or escaped by ``repr``."""
    forms = [re.escape(char)]
    encoded = ""
    for byte in char.encode("utf-8"):
        encoded += "%" + "".join(f"[{c}{c.upper()}]" if c.isalpha() else c
                                 for c in f"{byte:02x}")
    forms.append(encoded)
    if char in "\\'\"":
        forms.append(re.escape("\\" + char))
    return "(?:" + "|".join(forms) + ")"


def _secret_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = sorted({s for s in secrets if s}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile("|".join("".join(_char_forms(c) for c in s) for s in alternatives))


def _redact_pair(match: re.Match[str]) -> str:
    return (f"{match['lead']}{match['name']}={REDACTED}"
            if redact_token(f"?{match['name']}=x") != f"?{match['name']}=x"
            else match.group(0))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets (in any spelling) and every credential-shaped value
    (``token`` query parameters, ``Bearer``/``Basic`` values, URL passwords) replaced."""
    pattern = _secret_pattern(secrets)
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _QUERY_PAIR.sub(_redact_pair, text)
    text = _AUTH_VALUE.sub(lambda m: f"{m['scheme']}{m['gap']}{REDACTED}", text)
    return _USERINFO.sub(lambda m: f"{m['lead']}:{REDACTED}@", text)


def escape_controls(text: str) -> str:
    """Control characters (newlines included) and line separators as ``\\xNN``/``\\uNNNN``."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
        else f"\\u{ord(m.group()):04x}",
        text,
    )


class RedactingFilter(logging.Filter):
    """Rewrites each record in place: message formatted, redacted and escaped; traceback
    redacted. Never drops a record."""

    def __init__(self, secrets: Callable[[], Iterable[str]] = tuple) -> None:
        super().__init__("hyperdash_otel.redact")
        self._secrets = secrets
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(self._secrets())
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, still redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = escape_controls(redact(message, secrets))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


# -- installing, for a server's lifetime -------------------------------------------------------

_lock = threading.Lock()
_secrets_by_owner: dict[int, tuple[str, ...]] = {}
_installed_on: list[logging.Logger] = []


def _current_secrets() -> tuple[str, ...]:
    with _lock:
        return tuple(s for secrets in _secrets_by_owner.values() for s in secrets)


FILTER = RedactingFilter(_current_secrets)
"""The one filter :func:`install` puts on every logger of the server (redacting every
running server's secrets)."""


def _loggers() -> list[logging.Logger]:
    names = set(LOGGERS) | {
        name for name in logging.root.manager.loggerDict if name.startswith("hyperdash_otel")
    }
    return [logging.getLogger(name) for name in sorted(names)]


def install(owner: object, secrets: Iterable[str | None]) -> None:
    """Put the filter on every server logger while ``owner`` (a running server) lives,
    redacting ``secrets`` besides the credential-shaped values. Idempotent per owner."""
    with _lock:
        _secrets_by_owner[id(owner)] = tuple(s for s in secrets if s)
        for logger in _loggers():
            if FILTER not in logger.filters:
                logger.addFilter(FILTER)
                _installed_on.append(logger)


def uninstall(owner: object) -> None:
    """Forget ``owner``'s secrets; the last owner out takes the filter off again.
    Idempotent: a second call, or one for an owner never installed, does nothing."""
    with _lock:
        _secrets_by_owner.pop(id(owner), None)
        if _secrets_by_owner:
            return
        for logger in _installed_on:
            logger.removeFilter(FILTER)
        _installed_on.clear()


def installed() -> list[str]:
    """Names of the loggers carrying the filter now (for tests and debugging)."""
    with _lock:
        return sorted(logger.name for logger in _installed_on)


# -- rate-limited lines ----------------------------------------------------------------------


class RateLimitedLog:
    """At most one line per kind per ``interval``; the next line says how many were held
    back. Remembers at most :data:`MAX_KINDS` kinds."""

    def __init__(self, logger: logging.Logger, interval: float = REFUSAL_INTERVAL, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._kinds: OrderedDict[object, list[float]] = OrderedDict()

    @property
    def kinds(self) -> int:
        """Kinds remembered now (at most :data:`MAX_KINDS`)."""
        return len(self._kinds)

    def log(self, kind: object, level: int, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log ``msg % args`` unless a line of this ``kind`` went out less than
        ``interval`` ago; returns whether it was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        held = 0 if state is None else int(state[1])
        self._kinds[kind] = [now, 0.0]
        self._kinds.move_to_end(kind)
        while len(self._kinds) > MAX_KINDS:
            self._kinds.popitem(last=False)
        if held:
            msg += f" (and {held} more like it in the previous {self.interval:g}s)"
        self.logger.log(level, msg, *args, **kwargs)
        return True


server_log = logging.getLogger("hyperdash_otel.server")
access_log = logging.getLogger("hyperdash_otel.access")


class ServerLogs:
    """One server's rate-limited logs: refusals in the access log, and its own faults."""

    def __init__(self, interval: float = REFUSAL_INTERVAL) -> None:
        self.access = RateLimitedLog(access_log, interval)
        self.faults = RateLimitedLog(server_log, interval)


def _logs(handler: RequestHandler) -> ServerLogs:
    logs = getattr(handler.application, "logs", None)
    if not isinstance(logs, ServerLogs):  # an Application not made by make_app
        logs = ServerLogs()
        handler.application.logs = logs  # type: ignore[attr-defined]
    return logs


def request_summary(handler: RequestHandler) -> str:
    request = handler.request
    return f"{request.method} {redact_token(request.uri or '')} ({request.remote_ip})"


ACCESS_LINE = "%d %s %s (%s) %.2fms"
"""Status, method, URI (token redacted), client address, milliseconds."""


def log_answered(status: int, method: str, uri: str, address: str | None, ms: float
                 ) -> None:
    """The access log line of an answer under 400, at INFO (``uri`` redacted here)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(ACCESS_LINE, status, method, redact_token(uri), address, ms)


def log_request(handler: RequestHandler) -> None:
    """The access log line: INFO for answers and normal refusals (4xx, 503), those
    rate-limited per status; ERROR, rate-limited too, for the server's own faults."""
    status = handler.get_status()
    request = handler.request
    if status < 400:
        log_answered(status, request.method or "", request.uri or "", request.remote_ip,
                     1000.0 * request.request_time())
        return
    level = logging.ERROR if status >= 500 and status != 503 else logging.INFO
    _logs(handler).access.log(status, level, ACCESS_LINE, status, request.method,
                              redact_token(request.uri or ""), request.remote_ip,
                              1000.0 * request.request_time())


def log_exception(handler: RequestHandler, typ: type[BaseException] | None,
                  value: BaseException | None, tb: TracebackType | None) -> None:
    """Tornado's ``log_exception`` with the URI redacted: an HTTP error's detail at DEBUG
    (its access line says the rest), an uncaught exception at ERROR with its traceback,
    once per kind per interval."""
    if isinstance(value, HTTPError):
        detail = value.get_message()
        if detail and server_log.isEnabledFor(logging.DEBUG):
            server_log.debug("%d %s: %s", value.status_code, request_summary(handler), detail)
        return
    where = traceback.extract_tb(tb)[-1] if tb is not None else None
    kind = (typ, None if where is None else (where.filename, where.lineno))
    _logs(handler).faults.log(
        kind, logging.ERROR, "uncaught exception in %s", request_summary(handler),
        exc_info=(typ, value, tb),
    )

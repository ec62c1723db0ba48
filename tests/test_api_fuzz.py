"""Sequences of Python API calls with hostile values: every call either applies in full or
raises ValueError/TypeError and changes nothing, and the dashboard always encodes.

Each call's expected outcome comes from the documented rules (README "Bad input",
validation.py), written out here independently of the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from hyperdash_otel import (
    HEALTH_STATUSES,
    JOB_STATUSES,
    SEVERITIES,
    Config,
    Dashboard,
    JobInfo,
)
from hyperdash_otel.server.stream import encode_snapshot

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
MAX_TEXT = 12
MAX_JOBS = 4
MAX_ALERTS = 3
LIMIT = 2**63
SURROGATES = "[\ud800-\udfff]"

# -- the rules, as the README states them ---------------------------------------------------


class Invalid(Exception):
    """The call must raise ValueError or TypeError."""


def as_count(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or not 0 <= int(x) < LIMIT:
        raise Invalid
    return int(x)


def as_real(x: object, high: float = LIMIT) -> float:
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, Decimal)):
        raise Invalid
    if isinstance(x, numbers.Integral) and abs(int(x)) > LIMIT:
        raise Invalid
    try:
        f = float(x)
    except (ArithmeticError, ValueError):
        raise Invalid from None
    if not (math.isfinite(f) and 0 <= f <= high):
        raise Invalid
    return f


def as_clean(x: str) -> str:
    """Lone surrogates become U+FFFD; a surrogate pair split in two is joined."""
    return x.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def as_text(x: object, *, empty: bool = True) -> str:
    if not isinstance(x, str):
        raise Invalid
    x = as_clean(x)
    if (not empty and not x.strip()) or len(x) > MAX_TEXT:
        raise Invalid
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", x):
        raise Invalid
    return x


def as_id(x: object) -> str:
    if not isinstance(x, str) or re.search(SURROGATES, x) or re.search(r"[\x00-\x1f\x7f]", x):
        raise Invalid
    return as_text(x, empty=False)


def as_choice(x: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(x, str) or x.strip().lower() not in allowed:
        raise Invalid
    return x.strip().lower()


def as_moment(x: object) -> None:
    if x is None:
        return
    if not isinstance(x, datetime):
        raise Invalid
    try:
        x.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise Invalid from None


def as_duration(x: object) -> None:
    if x is not None:
        as_real(x.total_seconds() if isinstance(x, timedelta) else x)


# -- values: each call is a valid one with, half the time, one argument made hostile -------

ODD_NUMBERS = [
    -1, 2**63 - 1, 2**63, 2**64, 10**400, -(10**400), -0.0, 0.5, 1e308, -1e308, 5e-324,
    math.nan, math.inf, -math.inf, Decimal("2.5"), Decimal("-0"), Decimal("1e400"),
    Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), Fraction(7, 2), Fraction(10**400),
    np.int64(3), np.int64(-3), np.uint64(2**64 - 1), np.float32("inf"), np.float64("nan"),
    np.float64(2.5), np.float16(1), np.bool_(True), True, False,
]
WRONG_TYPES = [None, "1", b"1", [1], {"id": "a"}, object(), "yesterday"]
ODD_MOMENTS = [
    datetime.min, datetime.max, datetime.max.replace(tzinfo=timezone.utc),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
    timedelta.max, -timedelta(seconds=1),
]

odd_chars = st.one_of(
    st.characters(codec="utf-8"),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
    st.characters(max_codepoint=0x1F),
    st.sampled_from(["\x7f", "\u2028", "\ufeff", "é", "\U0001f600", "\t", "\n"]),
)
texts = st.one_of(
    st.text(max_size=MAX_TEXT),
    st.text(odd_chars, max_size=MAX_TEXT + 2),  # surrogates, control characters
    st.binary(max_size=MAX_TEXT).map(os.fsdecode),  # undecodable bytes as surrogates
    st.integers(MAX_TEXT - 1, MAX_TEXT + 1).map(lambda n: "x" * n),
    st.sampled_from(["\ud83d\ude00", "a\ud83d", " ", ""]),
)
hostile = st.one_of(st.sampled_from(ODD_NUMBERS + WRONG_TYPES + ODD_MOMENTS), texts,
                    st.floats(), st.integers(-(2**70), 2**70))

counts = st.one_of(st.integers(0, 100), st.sampled_from([2**63 - 1, np.int64(3), np.uint64(7)]))
totals = st.integers(0, 40)  # often, not always, at least the last one
reals = st.one_of(st.integers(0, 100), st.floats(0, 1e6), st.sampled_from(
    [Decimal("2.5"), Fraction(7, 2), np.float32(1.5), np.float64(2.5), 2.0**63, -0.0, 5e-324]))


def words(allowed: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(allowed + tuple(w.upper() for w in allowed)
                           + tuple(f" {w} " for w in allowed))


def one_hostile(valid: st.SearchStrategy[tuple[Any, ...]], names: list[Any]
                ) -> st.SearchStrategy[Any]:
    """``valid`` as is, or with the value at one of ``names`` replaced by a hostile one."""
    def replace(drawn: tuple[Any, tuple[Any, Any] | None]) -> Any:
        value, swap = drawn
        if swap is not None:
            value[swap[0]] = swap[1]
        return value
    return st.tuples(valid, st.none() | st.tuples(st.sampled_from(names), hostile)).map(replace)


def call(method: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    valid = st.tuples(*args).map(list)
    return st.tuples(st.just(method), one_hostile(valid, list(range(len(args)))).map(tuple))


JOB_FIELDS = [f.name for f in dataclasses.fields(JobInfo)]
TEXT_FIELDS = [name for name in JOB_FIELDS if name in ("name", "provider", "vm_name")
               or name.startswith("error")]


def job_with_one_hostile_field(drawn: tuple[JobInfo, tuple[str, Any] | None]) -> JobInfo:
    job, swap = drawn
    if swap is not None:
        setattr(job, *swap)
    return job


valid_jobs = st.builds(
    JobInfo, id=st.sampled_from(["a", "b", "c", "d", "e"]) | st.text(min_size=1, max_size=4),
    name=texts, status=words(JOB_STATUSES), progress=reals.filter(lambda x: x <= 100),
    start_time=st.sampled_from([None, NOW, datetime(2026, 11, 25, 9)]),  # naive: local time
    end_time=st.sampled_from([None, NOW]),
    duration=st.none() | st.floats(0, 1e6) | st.just(timedelta(seconds=5)),
    provider=st.sampled_from(["aws", "gcp", ""]) | texts, vm_name=texts,
)
jobs = st.tuples(valid_jobs, st.none() | st.tuples(st.sampled_from(JOB_FIELDS), hostile)).map(
    job_with_one_hostile_field)

calls = st.one_of(
    call("update_job_metrics", counts, totals, totals, counts, counts),
    call("update_system_metrics", reals, reals, counts),
    call("update_http_metrics", totals, totals, reals),
    call("add_job", jobs),
    call("add_alert", words(SEVERITIES), texts),
    call("set_system_health", words(HEALTH_STATUSES)),
    call("dismiss_alert", st.sampled_from(["alert-1", "alert-2", "alert-9", ""])),
    st.tuples(st.just("clear_alerts"), st.just(())),
    st.tuples(st.just("user_metric"), st.tuples(texts, texts)),
)


# -- the model: what a successful call must show --------------------------------------------


@dataclass
class Model:
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("completed", "failed", "requests", "errors"), 0))
    user_labels: list[str] = field(default_factory=list)

    def expect(self, method: str, args: tuple[Any, ...]) -> Any:
        """What a call must do (a value to check after it), or raise Invalid."""
        if method == "update_job_metrics":
            active, completed, failed, pending, queue = (as_count(a) for a in args)
            self.monotonic(completed=completed, failed=failed)
            return {"jobs_active": active, "jobs_completed": completed, "jobs_failed": failed,
                    "jobs_pending": pending, "queue_length": queue}
        if method == "update_system_metrics":
            memory, cpu, threads = as_real(args[0]), as_real(args[1]), as_count(args[2])
            return {"memory_usage": memory, "cpu_usage": cpu, "goroutines": threads}
        if method == "update_http_metrics":
            requests, errors, avg = as_count(args[0]), as_count(args[1]), as_real(args[2])
            self.monotonic(requests=requests, errors=errors)
            return {"http_requests": requests, "http_errors": errors, "avg_response_time": avg}
        if method == "add_job":
            job = args[0]
            if not isinstance(job, JobInfo):
                raise Invalid
            texts_ = {name: as_text(getattr(job, name)) for name in TEXT_FIELDS}
            expected = {"id": as_id(job.id), "status": as_choice(job.status, JOB_STATUSES),
                        "progress": as_real(job.progress, high=100.0), **texts_}
            as_moment(job.start_time)
            as_moment(job.end_time)
            as_duration(job.duration)
            return expected
        if method == "add_alert":
            return {"severity": as_choice(args[0], SEVERITIES),
                    "message": as_text(args[1], empty=False)}
        if method == "set_system_health":
            return as_choice(args[0], HEALTH_STATUSES)
        if method == "dismiss_alert":
            if not isinstance(args[0], str):
                raise Invalid
            return args[0]
        return None  # clear_alerts

    def monotonic(self, **new: int) -> None:
        if any(new[k] < self.totals[k] for k in new):
            raise Invalid
        self.totals.update(new)


def close(a: float, b: float, places: int) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.5 * 10**-places + 1e-9)


def check_applied(snap: dict[str, Any], method: str, expected: Any, result: Any) -> None:
    if method == "update_job_metrics" or method == "update_http_metrics":
        for key, value in expected.items():
            places = 3 if key == "avg_response_time" else 0
            assert close(snap[key], value, places), (key, snap[key], value)
    elif method == "update_system_metrics":
        assert close(snap["memory_usage"], expected["memory_usage"], 0)
        assert close(snap["cpu_usage"], expected["cpu_usage"], 2)
        assert close(snap["goroutines"], expected["goroutines"], 0)
    elif method == "add_job":
        job = next(j for j in snap["recent_jobs"] if j["id"] == expected["id"])
        assert job["status"] == expected["status"]
        assert abs(job["progress"] - expected["progress"]) < 1
        for key in TEXT_FIELDS:
            if expected[key] or key.startswith("error"):  # an empty text keeps the old one
                assert job[key] == expected[key], (key, job[key], expected[key])
    elif method == "add_alert":
        assert {k: snap["alerts"][0][k] for k in ("id", "severity", "message")} == {
            "id": result, **expected}
    elif method == "set_system_health":
        assert snap["system_health"] == expected
    elif method == "dismiss_alert":
        assert expected not in [a["id"] for a in snap["alerts"]]
    elif method == "clear_alerts":
        assert snap["alerts"] == []


def observe(dash: Dashboard) -> tuple[dict[str, Any], bytes, bytes]:
    return dash.snapshot(now=NOW), dash.exposition()[0], dash.exposition(OPENMETRICS)[0]


def assert_encodes(dash: Dashboard) -> None:
    """What the tick, /api/jobs and both /metrics formats send: strict UTF-8, parseable."""
    json.loads(encode_snapshot(dash.snapshot()).decode("utf-8"))
    json.dumps(dash.jobs(), ensure_ascii=False).encode("utf-8")
    list(parse_text(dash.exposition()[0].decode("utf-8")))
    list(parse_openmetrics(dash.exposition(OPENMETRICS)[0].decode("utf-8")))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(calls, max_size=12))
def test_every_call_applies_in_full_or_changes_nothing(sequence: list[tuple[str, Any]]) -> None:
    dash = Dashboard(Config(collect_system_metrics=False, max_jobs=MAX_JOBS,
                            max_alerts=MAX_ALERTS, max_text_length=MAX_TEXT))
    model = Model()
    counter = dash.meter_provider.get_meter("user").create_counter(
        "user.exports", description="exports of \udcff")
    try:
        for method, args in sequence:
            if method == "user_metric":  # a user's own instrument: any str goes in
                label, value = args
                counter.add(1, {"file": label, "vm": value})
                series = dash.snapshot(now=NOW)["custom"]["user_exports_total"]
                assert (as_clean(label), as_clean(value)) in [
                    (s["labels"]["file"], s["labels"]["vm"]) for s in series]
                continue
            before = observe(dash)
            try:
                expected = model.expect(method, args)
            except Invalid:
                try:
                    getattr(dash, method)(*args)
                except (ValueError, TypeError):
                    pass
                else:
                    raise AssertionError(f"{method}{args!r} should have been refused") from None
                assert observe(dash) == before, f"{method}{args!r} changed state"
                continue
            result = getattr(dash, method)(*args)
            check_applied(dash.snapshot(now=NOW), method, expected, result)
        snap = dash.snapshot(now=NOW)
        assert len(snap["recent_jobs"]) <= MAX_JOBS and len(snap["alerts"]) <= MAX_ALERTS
        assert_encodes(dash)
    finally:
        dash.close()


HOSTILE_CONFIG_VALUES = [*ODD_NUMBERS, *WRONG_TYPES, *ODD_MOMENTS, -(2**70), 2**70,
                         "", " ", "\udcff", "\x00", "x" * 10_000, ("a", 5), ("\udcff",)]


def test_every_config_field_refuses_hostile_values_with_value_or_type_error() -> None:
    """Every field (also those added later) against every hostile value: a Config is made,
    or ValueError/TypeError names the field; never OverflowError or AttributeError."""
    wrong = []
    for name in [f.name for f in dataclasses.fields(Config)]:
        for value in HOSTILE_CONFIG_VALUES:
            try:
                Config(**{name: value})
            except (ValueError, TypeError) as exc:
                if name not in str(exc) and not name.startswith("tls_"):  # "given together"
                    wrong.append(f"{name}={value!r:.40}: {exc!r:.80} does not name it")
            except Exception as exc:
                wrong.append(f"{name}={value!r:.40}: {exc!r:.80}")
    assert not wrong, "\n".join(wrong)

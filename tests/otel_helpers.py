"""Helpers for the OpenTelemetry tests.

:class:`OtlpReceiver` is a loopback OTLP/HTTP metrics receiver, what a Collector would get:
it decodes each ``ExportMetricsServiceRequest`` with opentelemetry-proto and keeps the newest
data point of every (metric, attributes), plus the last resource it saw.
"""

from __future__ import annotations

import functools

import gzip
import threading
import zlib
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

import support
from support import get_json, get_text

__all__ = ["get_json", "get_text", "wait_until"]

wait_until = functools.partial(support.wait_until, every=0.01)
"""``support.wait_until`` at a gentler poll: these tests poll over HTTP, under the rate limit."""

MAX_BODY = 16 * 1024 * 1024


def snapshot_time(snapshot: dict[str, Any]) -> float:
    """The snapshot's ``timestamp`` as seconds since the epoch."""
    return datetime.fromisoformat(snapshot["timestamp"].replace("Z", "+00:00")).timestamp()


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


class Point:
    """One data point: ``value`` for sums and gauges, ``count``/``sum`` for histograms."""

    def __init__(self, kind: str, unit: str, attributes: dict[str, Any], *, value: float = 0.0,
                 count: int = 0, total: float = 0.0, monotonic: bool | None = None) -> None:
        self.kind = kind
        self.unit = unit
        self.attributes = attributes
        self.value = value
        self.count = count
        self.sum = total
        self.monotonic = monotonic

    def __repr__(self) -> str:
        return (f"Point({self.kind}, {self.unit!r}, {self.attributes}, value={self.value}, "
                f"count={self.count}, sum={self.sum})")


class OtlpReceiver:
    """``POST /v1/metrics`` on 127.0.0.1, any free port; ``stop()`` closes the socket."""

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.resource: dict[str, Any] = {}
        self.points: dict[tuple[str, tuple[tuple[str, Any], ...]], Point] = {}
        self.scopes: set[str] = set()
        self.held = 0
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                if self.path != "/v1/metrics" or not 0 < length <= MAX_BODY:
                    self.send_error(404 if self.path != "/v1/metrics" else 400)
                    return
                body = self.rfile.read(length)
                if not receiver.hold.is_set():
                    # A slow Collector: answer only once released (bounded by the test).
                    with receiver.lock:
                        receiver.held += 1
                    receiver.hold.wait(30)
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _add(self, request: ExportMetricsServiceRequest) -> None:
        with self.lock:
            self.requests += 1
            for rm in request.resource_metrics:
                self.resource = _attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    self.scopes.add(sm.scope.name)
                    for metric in sm.metrics:
                        self._add_metric(metric)

    def _add_metric(self, metric: Any) -> None:
        kind = metric.WhichOneof("data")
        data = getattr(metric, kind)
        for dp in data.data_points:
            attributes = _attrs(dp.attributes)
            if kind == "histogram":
                point = Point(kind, metric.unit, attributes, count=dp.count, total=dp.sum)
            else:
                number = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
                point = Point(kind, metric.unit, attributes, value=number,
                              monotonic=getattr(data, "is_monotonic", None))
            self.points[(metric.name, tuple(sorted(attributes.items())))] = point

    def metric(self, name: str) -> list[Point]:
        """The newest point of every attribute set of ``name``."""
        with self.lock:
            return [p for (n, _), p in self.points.items() if n == name]

    def value(self, name: str, **attributes: Any) -> float | None:
        with self.lock:
            point = self.points.get((name, tuple(sorted(attributes.items()))))
        return None if point is None else point.value

    def names(self) -> set[str]:
        with self.lock:
            return {n for n, _ in self.points}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

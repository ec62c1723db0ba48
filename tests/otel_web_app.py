"""A Starlette app on uvicorn, instrumented with opentelemetry-instrumentation-asgi on a
dashboard's MeterProvider; both serve on 127.0.0.1, any free port.

Run as a script (each semantic-conventions mode needs a fresh process: the instrumentation
reads OTEL_SEMCONV_STABILITY_OPT_IN once). Prints one JSON line with both URLs, then serves
until stdin closes.

Routes: /ok (200), /fail (503), /gone (404), each after sleeping ``DELAY`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading

import uvicorn
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from hyperdash_otel import Config, Dashboard

DELAY = 0.02
TICK = 0.2


async def ok(request: Request) -> PlainTextResponse:
    await asyncio.sleep(DELAY)
    return PlainTextResponse("ok")


async def fail(request: Request) -> PlainTextResponse:
    await asyncio.sleep(DELAY)
    return PlainTextResponse("unavailable", status_code=503)


async def gone(request: Request) -> PlainTextResponse:
    await asyncio.sleep(DELAY)
    return PlainTextResponse("gone", status_code=404)


def main() -> None:
    dash = Dashboard(Config(port=0, update_interval=TICK, collect_system_metrics=False))
    dash.start_in_thread()
    app = OpenTelemetryMiddleware(
        Starlette(routes=[Route("/ok", ok), Route("/fail", fail), Route("/gone", gone)]),
        meter_provider=dash.meter_provider,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    print(json.dumps({"dashboard": dash.url, "app": f"http://127.0.0.1:{port}/"}), flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.should_exit = True
    thread.join(10)
    dash.close()


if __name__ == "__main__":
    main()

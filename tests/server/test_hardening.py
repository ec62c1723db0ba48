"""Issue #12 items 3, 4, 6, 7 and #13 item 6, over real sockets: the Host allowlist (DNS
rebinding), secrets and forged lines kept out of the log, JSON for Tornado's own errors,
HSTS, basic auth, the metrics token, the exposure warning and the log levels."""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from rawhttp import MANUAL, RawResponse, exchange, request, wait_until
from websockets.exceptions import InvalidStatus

from hyperdash_otel import Config
from hyperdash_otel.cli import main
from hyperdash_otel.server import logs
from hyperdash_otel.server.handlers import MAX_PASSWORD_CHECKS
from hyperdash_otel.server.security import HSTS, hash_password


TOKEN = "correct-horse-battery"
METRICS_TOKEN = "scrape-only-token-42"
PASSWORD = "open sesame, 42"
ALICE = f"alice:{hash_password(PASSWORD, n=2**10)}"  # cheap N: the tests check logic, not cost
EVERY_PATH = ["/", "/api/metrics", "/api/jobs", "/api/jobs/j1", "/metrics", "/healthz",
              "/static/js/main.js", "/static/vendor/chart.umd.js", "/nope", "/ws"]


def assert_json_error(resp: RawResponse | Any, status: int, fragment: str = "") -> None:
    assert resp.status == status, (resp.status, resp.body)
    content_type = (resp.header("Content-Type") if isinstance(resp, RawResponse)
                    else resp.headers["Content-Type"])
    assert content_type == "application/json"
    body = json.loads(resp.body)
    assert body["status"] == status and fragment in body["error"], body
    assert set(body) == {"error", "status"}


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def upgrade_headers(origin: str | None = None) -> dict[str, str]:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    if origin is not None:
        headers["Origin"] = origin
    return headers


def access_lines(caplog: pytest.LogCaptureFixture, count: int = 1) -> list[logging.LogRecord]:
    """The access log's records, once there are ``count`` (the line is written just after
    the response is sent, so the client may read the response first)."""
    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "hyperdash_otel.access"]
    return wait_until(lambda: len(lines()) >= count and lines(), what=f"{count} access lines")


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger, DEBUG and up."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


# -- the Host allowlist ----------------------------------------------------------------------


class TestHostAllowlist:
    @pytest.mark.parametrize("path", EVERY_PATH)
    def test_a_rebound_name_is_refused_on_every_path(self, serve: Callable[..., Any],
                                                     path: str) -> None:
        s = serve()
        evil = f"evil.test:{s.port}"
        headers = upgrade_headers(f"http://{evil}") if path == "/ws" else {}
        resp = request(s.port, path, host=evil, headers=headers)
        assert_json_error(resp, 421, "host not allowed: 'evil.test")
        assert "allowed_hosts" in resp.json()["error"]

    def test_the_rebinding_websocket_of_the_issue_gets_no_101(self, serve: Callable[..., Any]
                                                              ) -> None:
        s = serve()
        resp = request(s.port, "/ws", host=f"evil.test:{s.port}",
                       headers=upgrade_headers(f"http://evil.test:{s.port}"))
        assert resp.status == 421 and s.ctx.fanout.reserved == 0

    @pytest.mark.parametrize("method", ["POST", "DELETE", "OPTIONS", "HEAD"])
    def test_before_anything_else(self, serve: Callable[..., Any], method: str) -> None:
        s = serve(auth_token=TOKEN)
        resp = request(s.port, "/api/metrics", method=method, host="evil.test")
        assert resp.status == 421  # not 405, not 401: the name is refused first

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST."])
    def test_loopback_names_are_answered(self, serve: Callable[..., Any], host: str) -> None:
        s = serve()
        resp = request(s.port, "/api/metrics", host=f"{host}:{s.port}")
        assert resp.status == 200

    def test_allowed_hosts_adds_names_and_domains(self, serve: Callable[..., Any]) -> None:
        s = serve(allowed_hosts=("dash.example.com", ".corp.test"))
        for host in ("dash.example.com", "dash.example.com:443", "corp.test", "a.b.corp.test"):
            assert request(s.port, "/healthz", host=host).status == 200, host
        for host in ("example.com", "evilcorp.test", "corp.test.evil", "evil.test"):
            assert request(s.port, "/healthz", host=host).status == 421, host

    def test_a_star_answers_any_host(self, serve: Callable[..., Any]) -> None:
        s = serve(allowed_hosts=("*",))
        assert request(s.port, "/api/metrics", host="whatever.example").status == 200

    def test_a_wildcard_bind_answers_addresses_but_not_strange_names(
        self, serve: Callable[..., Any], logged: pytest.LogCaptureFixture
    ) -> None:
        s = serve(host="0.0.0.0")
        assert request(s.port, "/api/metrics", host=f"10.1.2.3:{s.port}").status == 200
        assert request(s.port, "/api/metrics", host=f"[fe80::1]:{s.port}").status == 200
        assert request(s.port, "/api/metrics", host=f"evil.test:{s.port}").status == 421

    def test_the_page_of_an_allowed_host_opens_the_stream(self, serve: Callable[..., Any]
                                                          ) -> None:
        s = serve(allowed_hosts=(".corp.test",))
        for host in (f"dash.corp.test:{s.port}", f"localhost:{s.port}"):
            resp = request(s.port, "/ws", host=host, headers=upgrade_headers(f"http://{host}"))
            assert resp.status == 101, host
        other = request(s.port, "/ws", host=f"dash.corp.test:{s.port}",
                        headers=upgrade_headers(f"http://evil.test:{s.port}"))
        assert_json_error(other, 403, "origin not allowed")
        long = request(s.port, "/ws", host=f"dash.corp.test:{s.port}",
                       headers=upgrade_headers(f"http://{'e' * 20_000}.test"))
        assert_json_error(long, 403, "origin not allowed: http://eeee")
        assert "...(20012 characters)" in json.loads(long.body)["error"]  # not echoed whole

    def test_behind_a_tls_proxy_as_the_readme_says(self, serve: Callable[..., Any]) -> None:
        # The proxy passes Host on; the page's origin is https while the server speaks http.
        headers = upgrade_headers("https://dash.example.com")
        plain = serve(allowed_hosts=("dash.example.com",))
        assert request(plain.port, "/", host="dash.example.com").status == 200
        assert_json_error(request(plain.port, "/ws", host="dash.example.com", headers=headers),
                          403, "origin not allowed")
        s = serve(allowed_hosts=("dash.example.com",),
                  allowed_origins=("https://dash.example.com",))
        assert request(s.port, "/ws", host="dash.example.com", headers=headers).status == 101

    def test_config_names_the_field(self) -> None:
        for bad in ("http://dash.example.com", "dash.example.com:8080", "a/b", "", "a..b"):
            with pytest.raises(ValueError, match="allowed_hosts"):
                Config(allowed_hosts=(bad,))
        assert Config.from_env({"HYPERDASH_ALLOWED_HOSTS": "A.example.com, .b.test"}
                               ).allowed_hosts == ("a.example.com", ".b.test")

    def test_the_cli_flag(self, spawn: Callable[..., Any]) -> None:
        proc = spawn("serve", "--port", "0", "--allowed-host", "dash.example.com",
                     "--allowed-host", ".corp.test")
        port = int(proc.url.rsplit(":", 1)[1].strip("/"))
        assert request(port, "/healthz", host="x.corp.test").status == 200
        assert request(port, "/healthz", host="dash.example.com").status == 200
        assert request(port, "/healthz", host="evil.test").status == 421


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_no_cors_for_other_pages(serve: Callable[..., Any], method: str) -> None:
    s = serve()
    for path in EVERY_PATH:
        resp = request(s.port, path, method=method, headers={
            "Origin": "http://evil.test", "Access-Control-Request-Method": "GET"})
        assert not [h for h in resp.headers if h.startswith("access-control-")], path


# -- secrets and forged lines never reach the log ----------------------------------------------


def assert_clean(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    text = caplog.text
    for secret in secrets:
        assert secret not in text, f"{secret!r} logged"
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message and "\r" not in message, message


class TestNoSecretInTheLog:
    @pytest.mark.parametrize(
        ("path", "headers"),
        [
            (f"/api/jobs?token={TOKEN}", {}),
            (f"/api/jobs?tok%65n={TOKEN}", {}),  # Tornado decodes the name: this is accepted
            (f"/api/jobs?%74oken={TOKEN}&limit=1", {}),
            ("/api/jobs?token=" + "".join(f"%{b:02X}" for b in TOKEN.encode()), {}),
            (f"/api/jobs?status=%ff&token={TOKEN}", {}),  # Tornado's own 400 (bad UTF-8)
            (f"/api/jobs?limit=x&tok%65n={TOKEN}", {}),
            (f"/static/..%2f..%2fpyproject.toml?token={TOKEN}", {}),  # a 403
            (f"/nope?token={TOKEN}", {}),
            (f"/ws?tok%65n={TOKEN}", upgrade_headers("http://elsewhere.test")),
            ("/api/jobs", {"Authorization": f"Bearer {TOKEN}"}),
            (f"http://user:{TOKEN}@127.0.0.1/api/jobs", {}),
        ],
    )
    def test_every_spelling_is_redacted(self, serve: Callable[..., Any],
                                        logged: pytest.LogCaptureFixture, path: str,
                                        headers: dict[str, str]) -> None:
        s = serve(auth_token=TOKEN)
        resp = request(s.port, path, headers=headers)
        assert resp.status is not None and resp.status < 500
        access_lines(logged)
        assert "<redacted>" in logged.text or "Bearer" in str(headers)
        assert_clean(logged, TOKEN, TOKEN.replace("-", "%2D"))

    def test_a_bad_header_value_is_logged_without_its_credential(
        self, serve: Callable[..., Any], logged: pytest.LogCaptureFixture
    ) -> None:
        # Tornado refuses the request itself and logs the header value it choked on.
        s = serve(auth_token=TOKEN, basic_auth=(ALICE,))
        creds = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        for value in (f"Bearer {TOKEN}\x01", f"Basic {creds}\x01"):
            resp = request(s.port, "/api/jobs", headers={"Authorization": value})
            assert resp.status == 400
        assert "Malformed HTTP message" in logged.text
        assert_clean(logged, TOKEN, creds)

    def test_the_metrics_token_too(self, serve: Callable[..., Any],
                                   logged: pytest.LogCaptureFixture) -> None:
        s = serve(metrics_token=METRICS_TOKEN)
        assert request(s.port, f"/metrics?tok%65n={METRICS_TOKEN}").status == 200
        assert request(s.port, f"/api/jobs?status=%ff&x={METRICS_TOKEN}").status == 400
        assert_clean(logged, METRICS_TOKEN)

    def test_a_500_logs_the_traceback_without_the_token(
        self, serve: Callable[..., Any], logged: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch
    ) -> None:
        s = serve(auth_token=TOKEN)

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"failed on /api/jobs?token={TOKEN}")

        monkeypatch.setattr(s.dash, "jobs", broken)
        assert_json_error(request(s.port, f"/api/jobs?tok%65n={TOKEN}"), 500)
        access_lines(logged)
        errors = [r for r in logged.records if r.levelno >= logging.ERROR]
        assert errors and "Traceback" in logged.text and "RuntimeError" in logged.text
        assert_clean(logged, TOKEN)

    def test_a_path_cannot_forge_a_log_line(self, serve: Callable[..., Any],
                                            logged: pytest.LogCaptureFixture) -> None:
        s = serve()
        forged = "2026-01-01 00:00:00 INFO hyperdash_otel.access: 200 GET admin"
        quoted = forged.replace(" ", "%20")
        # The issue's probe: a 403 for a path outside /static (Tornado's StaticFileHandler,
        # before the static files were served from memory, logged the path decoded).
        static = request(s.port, f"/static/%0a{quoted}%0a..%2f..%2f..%2f..").status
        assert static in (403, 404)
        for path in (f"/nope%0d%0a{quoted}", f"/api/jobs/%0a{quoted}",
                     f"/api/jobs?status=%0a{quoted}"):
            assert request(s.port, path).status in (400, 404)
        # The 403 (if any), the 400 and the first 404 (then rate-limited).
        access_lines(logged, 3 if static == 403 else 2)
        assert not any(line.startswith(forged) for line in logged.text.splitlines())
        assert_clean(logged)
        # Our static handler logs no decoded path at all (Tornado's StaticFileHandler did):
        # the access lines keep it percent-encoded, so no line break reaches the log.
        assert "admin\n" not in logged.text and "admin\r" not in logged.text

    def test_the_filter_lives_as_long_as_the_servers(self, serve: Callable[..., Any]) -> None:
        assert logs.installed() == []
        first, second = serve(auth_token=TOKEN), serve(metrics_token=METRICS_TOKEN)
        names = logs.installed()
        assert {"hyperdash_otel.access", "tornado.access", "tornado.general",
                "tornado.application"} <= set(names)
        assert len(names) == len(set(names))  # one filter per logger, not one per server
        record = logging.LogRecord("tornado.general", logging.INFO, __file__, 1,
                                   "%s %s", (TOKEN, METRICS_TOKEN), None)
        logs.FILTER.filter(record)
        assert record.getMessage() == "<redacted> <redacted>"
        first.stop()
        assert logs.installed() == names
        second.stop()
        assert logs.installed() == []
        second.stop()  # idempotent
        assert all(logs.FILTER not in logging.getLogger(n).filters for n in names)

    def test_every_logger_of_the_package_is_covered(self) -> None:
        package = Path(__file__).resolve().parents[2] / "hyperdash_otel"
        used = set()
        for source in package.rglob("*.py"):
            for line in source.read_text().splitlines():
                if "logging.getLogger(\"" in line:
                    used.add(line.split('getLogger("')[1].split('"')[0])
        assert used and used <= set(logs.LOGGERS)


# -- JSON errors, HSTS -----------------------------------------------------------------------


class TestJsonErrors:
    def test_ws_without_connection_upgrade(self, serve: Callable[..., Any]) -> None:
        s = serve()
        headers = upgrade_headers()
        del headers["Connection"]
        assert_json_error(request(s.port, "/ws", headers=headers), 400, "Connection: Upgrade")
        assert s.ctx.fanout.reserved == 0

    def test_ws_over_http_1_0_without_host(self, serve: Callable[..., Any]) -> None:
        s = serve()
        head = "GET /ws HTTP/1.0\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in upgrade_headers().items()) + "\r\n"
        assert_json_error(exchange(s.port, head.encode()), 400, "Host")

    def test_an_unsatisfiable_range(self, serve: Callable[..., Any]) -> None:
        s = serve()
        resp = request(s.port, "/static/js/main.js", headers={"Range": "bytes=99999999-"})
        assert_json_error(resp, 416, "range not satisfiable")
        size = len(request(s.port, "/static/js/main.js").body)
        assert resp.header("Content-Range") == f"bytes */{size}"
        assert request(s.port, "/static/js/main.js", headers={"Range": "bytes=0-9"}
                       ).status == 206

    @pytest.mark.parametrize("path", ["/static/%00", "/static/js/%00.js", "/static/" + "a" * 300])
    def test_a_path_no_file_system_takes_is_a_404(self, serve: Callable[..., Any], path: str
                                                 ) -> None:
        # Found by the fuzz: os.path.realpath raised ValueError (NUL) and the handler a 500.
        assert_json_error(request(serve().port, path), 404, "not found")

    def test_no_hsts_over_plain_http(self, serve: Callable[..., Any]) -> None:
        assert serve().request("/").headers["Strict-Transport-Security"] is None



@pytest.mark.parametrize("path", ["/", "/api/metrics", "/healthz", "/nope", "/static/x.js"])
def test_hsts_under_tls(serve: Callable[..., Any], certificate: tuple[str, str], path: str
                        ) -> None:
    cert, key = certificate
    s = serve(tls_certfile=cert, tls_keyfile=key)
    conn = http.client.HTTPSConnection(
        "127.0.0.1", s.port, context=ssl.create_default_context(cafile=cert), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("Strict-Transport-Security") == HSTS == "max-age=31536000"
    finally:
        conn.close()


# -- basic auth and the metrics token ----------------------------------------------------------


class TestBasicAuth:
    def test_a_user_gets_in_with_the_password(self, serve: Callable[..., Any]) -> None:
        s = serve(basic_auth=(ALICE,))
        for path in ("/", "/api/metrics", "/api/jobs", "/metrics"):
            assert s.request(path, headers=basic("alice", PASSWORD)).status == 200, path
        client = s.ws(additional_headers=basic("alice", PASSWORD))
        assert json.loads(client.recv(timeout=5))["timestamp"]

    @pytest.mark.parametrize("headers", [
        {}, basic("alice", "wrong"), basic("bob", PASSWORD), basic("alice", PASSWORD + " "),
        {"Authorization": "Basic !!!"}, {"Authorization": f"Bearer {PASSWORD}"},
    ])
    def test_anything_else_is_401_offering_basic(
        self, serve: Callable[..., Any], headers: dict[str, str]
    ) -> None:
        s = serve(basic_auth=(ALICE,))
        resp = request(s.port, "/api/metrics", headers=headers)
        assert_json_error(resp, 401, "missing or wrong user and password (Authorization: Basic)")
        assert resp.headers["www-authenticate"] == ['Basic realm="hyperdash", charset="UTF-8"']
        with pytest.raises(InvalidStatus) as err:
            s.ws(additional_headers=headers)
        assert err.value.response.status_code == 401

    @pytest.mark.parametrize(("config", "challenges", "wanted"), [
        ({"auth_token": TOKEN}, ['Bearer realm="hyperdash"'], "token (Authorization: Bearer"),
        ({"auth_token": TOKEN, "basic_auth": (ALICE,)},
         ['Bearer realm="hyperdash"', 'Basic realm="hyperdash", charset="UTF-8"'],
         "token or user and password (Authorization: Bearer or Basic)"),
    ])
    def test_the_401_offers_each_scheme_it_accepts(
        self, serve: Callable[..., Any], config: dict[str, Any], challenges: list[str],
        wanted: str
    ) -> None:
        resp = request(serve(**config).port, "/api/metrics")
        assert_json_error(resp, 401, wanted)
        assert resp.headers["www-authenticate"] == challenges

    def test_beside_the_token(self, serve: Callable[..., Any]) -> None:
        s = serve(basic_auth=(ALICE,), auth_token=TOKEN)
        assert s.request("/api/jobs", headers=basic("alice", PASSWORD)).status == 200
        assert s.request(f"/api/jobs?token={TOKEN}").status == 200
        assert s.request("/api/jobs").status == 401

    def test_a_right_password_is_checked_once(self, serve: Callable[..., Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
        s = serve(basic_auth=(ALICE,))
        checks: list[str] = []
        original = s.ctx.basic.check

        def counted(user: str, password: str) -> bool:
            checks.append(user)
            return original(user, password)

        monkeypatch.setattr(s.ctx.basic, "check", counted)
        for _ in range(5):
            assert s.request("/api/metrics", headers=basic("alice", PASSWORD)).status == 200
        for _ in range(2):
            assert s.request("/api/metrics", headers=basic("alice", "nope")).status == 401
        assert checks == ["alice"] * 3  # the first right one, then each wrong one

    def test_password_checks_at_once_are_bounded(self, serve: Callable[..., Any]) -> None:
        s = serve(basic_auth=(ALICE,))
        release = threading.Event()
        started: list[str] = []

        def slow(user: str, password: str) -> bool:
            started.append(user)
            release.wait(10)
            return False

        s.ctx.basic.check = slow  # type: ignore[method-assign]
        with ThreadPoolExecutor(MAX_PASSWORD_CHECKS) as pool:
            pending = [pool.submit(request, s.port, "/api/jobs", headers=basic("alice", "x"))
                       for _ in range(MAX_PASSWORD_CHECKS)]
            wait_until(lambda: len(started) == MAX_PASSWORD_CHECKS, what="checks running")
            extra = request(s.port, "/api/jobs", headers=basic("alice", "y"))
            assert_json_error(extra, 429, "too many password checks")
            assert extra.header("Retry-After") == "1"
            assert request(s.port, "/healthz").status == 200  # the loop is not blocked
            release.set()
            assert [f.result(10).status for f in pending] == [401] * MAX_PASSWORD_CHECKS
        assert s.ctx.basic.running == 0

    def test_hash_password_round_trip(self) -> None:
        from hyperdash_otel.server.security import PasswordHash, parse_basic_entry
        entry = hash_password("pässword")
        assert str(entry).startswith("scrypt:16384:8:1:")
        assert PasswordHash.parse(str(entry)).verify("pässword")
        assert not PasswordHash.parse(str(entry)).verify("password")
        assert hash_password("x").salt != hash_password("x").salt
        user, parsed = parse_basic_entry(f"bob:{entry}")
        assert (user, parsed) == ("bob", entry)

    @pytest.mark.parametrize("entry", [
        "alice", "alice:", ":scrypt:16384:8:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==",
        "alice:bcrypt:x", "alice:scrypt:1000:8:1:AAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA==",
        "alice:scrypt:16384:8:1:not-base64:AAAA",
    ])
    def test_bad_entries_name_the_field(self, entry: str) -> None:
        with pytest.raises(ValueError, match="basic_auth"):
            Config(basic_auth=(entry,))

    def test_a_user_listed_twice(self) -> None:
        with pytest.raises(ValueError, match="basic_auth"):
            Config(basic_auth=(ALICE, ALICE))

    def test_from_the_environment(self) -> None:
        other = f"bob:{hash_password('x', n=2**10)}"
        config = Config.from_env({"HYPERDASH_BASIC_AUTH": f"{ALICE},{other}"})
        assert config.basic_auth == (ALICE, other)

    def test_hash_password_command(self, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret pass\n"))
        assert main(["hash-password", "carol"]) == 0
        entry = capsys.readouterr().out.strip()
        from hyperdash_otel.server.security import BasicAuth
        assert BasicAuth.from_entries(Config(basic_auth=(entry,)).basic_auth).check(
            "carol", "s3cret pass")
        monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
        assert main(["hash-password", "carol"]) == 2
        assert main(["hash-password", "a:b"]) == 2


class TestMetricsToken:
    def test_it_opens_metrics_only(self, serve: Callable[..., Any]) -> None:
        s = serve(auth_token=TOKEN, metrics_token=METRICS_TOKEN)
        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert s.request("/metrics", headers=bearer).status == 200
        assert s.request(f"/metrics?token={METRICS_TOKEN}").status == 200
        assert s.request("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        for path in ("/", "/api/metrics", "/api/jobs", "/ws"):
            assert s.request(path, headers=bearer).status == 401, path
        assert s.request("/metrics").status == 401

    def test_alone_it_guards_metrics_and_nothing_else(self, serve: Callable[..., Any]) -> None:
        s = serve(metrics_token=METRICS_TOKEN)
        assert s.request("/api/metrics").status == 200
        assert_json_error(s.request("/metrics"), 401, "token")
        assert s.request("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
                         ).status == 200

    def test_config(self) -> None:
        with pytest.raises(ValueError, match="metrics_token"):
            Config(metrics_token="short")
        with pytest.raises(ValueError, match="auth_token"):
            Config(auth_token="has a space in it")
        env = {"HYPERDASH_METRICS_TOKEN": METRICS_TOKEN}
        assert Config.from_env(env).metrics_token == METRICS_TOKEN


# -- the exposure warning and the log levels ---------------------------------------------------


def warnings_about_exposure(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "without authentication" in r.getMessage()]


@pytest.mark.parametrize(("config", "warned"), [
    ({"host": "0.0.0.0"}, True),
    ({"host": "0.0.0.0", "auth_token": TOKEN}, False),
    ({"host": "0.0.0.0", "basic_auth": (ALICE,)}, False),
    ({"host": "0.0.0.0", "metrics_token": METRICS_TOKEN}, True),  # guards /metrics only
    ({"host": "127.0.0.1"}, False),
    ({"host": "localhost"}, False),
])
def test_a_warning_when_exposed_without_auth(serve: Callable[..., Any],
                                             logged: pytest.LogCaptureFixture,
                                             config: dict[str, Any], warned: bool) -> None:
    s = serve(**config)
    found = warnings_about_exposure(logged)
    assert bool(found) is warned
    if warned:
        assert found == [
            f"hyperdash: listening on 0.0.0.0 without authentication: anyone who can reach "
            f"port {s.port} reads every metric, job and alert. Set auth_token "
            "(HYPERDASH_AUTH_TOKEN) or basic_auth users, or bind 127.0.0.1."]


class TestLogLevels:
    def refusals(self, s: Any) -> None:
        origin = upgrade_headers("http://elsewhere.test")
        for _ in range(20):
            request(s.port, "/api/metrics")  # 401
            request(s.port, f"/ws?token={TOKEN}", headers=origin)  # 403
            request(s.port, f"/nope?token={TOKEN}")  # 404
            request(s.port, "/", host="evil.test")  # 421

    def test_normal_refusals_are_info_once_per_interval(
        self, serve: Callable[..., Any], logged: pytest.LogCaptureFixture
    ) -> None:
        # No tick to overrun under load; 20 wrong tokens would otherwise end in 429s.
        s = serve(auth_token=TOKEN, update_interval=MANUAL, auth_failures_per_minute=0)
        self.refusals(s)
        access = access_lines(logged, 4)
        assert {r.levelno for r in access} == {logging.INFO}
        statuses = sorted(int(r.getMessage().split()[0]) for r in access)
        assert statuses == [401, 403, 404, 421]
        assert not [r for r in logged.records if r.levelno >= logging.WARNING]

    def test_rate_limited_requests_are_info_not_warnings(
        self, serve: Callable[..., Any], logged: pytest.LogCaptureFixture
    ) -> None:
        s = serve(update_interval=MANUAL, rate_limit=1, rate_limit_burst=2)
        statuses = [request(s.port, "/api/metrics").status for _ in range(6)]
        assert statuses[:2] == [200, 200] and 429 in statuses
        assert not [r for r in logged.records if r.levelno >= logging.WARNING]

    def test_max_clients_is_info_not_error(self, serve: Callable[..., Any],
                                           logged: pytest.LogCaptureFixture) -> None:
        s = serve(max_clients=1, update_interval=MANUAL)
        s.ws().recv(timeout=5)
        for _ in range(10):
            assert request(s.port, "/ws", headers=upgrade_headers()).status == 503
        lines = [r for r in access_lines(logged) if r.getMessage().startswith("503")]
        assert [r.levelno for r in lines] == [logging.INFO]
        assert not [r for r in logged.records if r.levelno >= logging.WARNING]

    def test_a_500_is_an_error(self, serve: Callable[..., Any], logged: pytest.LogCaptureFixture,
                               monkeypatch: pytest.MonkeyPatch) -> None:
        s = serve()

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug")

        monkeypatch.setattr(s.dash, "jobs", broken)
        request(s.port, "/api/jobs")
        access_lines(logged)
        levels = {r.name: r.levelno for r in logged.records if r.levelno >= logging.ERROR}
        assert levels == {"hyperdash_otel.access": logging.ERROR,
                          "hyperdash_otel.server": logging.ERROR}


def test_rate_limited_log_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limited = logs.RateLimitedLog(logging.getLogger("hyperdash_otel.test"), 10.0,
                                  clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="hyperdash_otel.test"):
        assert limited.log(401, logging.INFO, "401 first")
        assert not any(limited.log(401, logging.INFO, "401 again") for _ in range(7))
        assert limited.log(404, logging.INFO, "404 first")  # another kind: its own budget
        now[0] += 10.0
        assert limited.log(401, logging.INFO, "401 later")
        assert [r.getMessage() for r in caplog.records] == [
            "401 first", "404 first", "401 later (and 7 more like it in the previous 10s)"]
        for kind in range(logs.MAX_KINDS + 10):
            limited.log(kind, logging.INFO, "x")
        assert limited.kinds == logs.MAX_KINDS

"""Credentials and the JSON GET, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from support import free_port
import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hyperdash_otel.fleet.http import Credentials, FetchError, JsonClient, check_url

TOKEN = "fleet-secret-token-1"
PASSWORD = "fleet-secret-password-2"


class Peer(ThreadingHTTPServer):
    """Answers each path as ``routes`` says and records every request's headers."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.delay = 0.0

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left: expected in the slow-peer test

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Peer

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.server.seen.append((self.path, dict(self.headers)))
        if self.server.delay:
            time.sleep(self.server.delay)  # a slow peer, on the server's side
        status, headers, body = self.server.routes.get(
            self.path.split("?")[0], (404, {}, b'{"error": "no such path"}'))
        self.send_response(status)
        for k, val in headers.items():
            self.send_header(k, val)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[Peer]:
    server = Peer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_bearer_token_is_sent_and_the_json_returned(peer: Peer) -> None:
    peer.routes["/api/x"] = (200, {}, b'{"ok": [1, 2]}')
    client = JsonClient(peer.base, Credentials(token=TOKEN))
    assert client.get_json("/api/x", {"q": "a b"}) == {"ok": [1, 2]}
    path, headers = peer.seen[-1]
    assert (path, headers["Authorization"]) == ("/api/x?q=a+b", f"Bearer {TOKEN}")


def test_basic_auth_is_sent(peer: Peer) -> None:
    peer.routes["/"] = (200, {}, b"[]")
    JsonClient(peer.base, Credentials(user="fleet", password=PASSWORD)).get_json("/")
    expected = base64.b64encode(f"fleet:{PASSWORD}".encode()).decode()
    assert peer.seen[-1][1]["Authorization"] == f"Basic {expected}"


def test_no_credentials_no_header(peer: Peer) -> None:
    peer.routes["/"] = (200, {}, b"{}")
    JsonClient(peer.base).get_json("/")
    assert "Authorization" not in peer.seen[-1][1]


def test_a_refusal_names_the_status_and_the_reason_never_the_credential(peer: Peer) -> None:
    peer.routes["/api/v1/query"] = (401, {}, json.dumps({"error": "unauthorized"}).encode())
    client = JsonClient(peer.base, Credentials(token=TOKEN))
    with pytest.raises(FetchError) as info:
        client.get_json("/api/v1/query", {"query": "up"})
    assert str(info.value) == f"127.0.0.1:{peer.server_address[1]}/api/v1/query answered " \
                              "401: unauthorized"
    assert TOKEN not in repr(client) and TOKEN not in str(info.value)


def test_a_redirect_is_never_followed(peer: Peer) -> None:
    peer.routes["/a"] = (302, {"Location": peer.base + "/b"}, b"")
    peer.routes["/b"] = (200, {}, b"{}")
    with pytest.raises(FetchError, match="answered 302"):
        JsonClient(peer.base, Credentials(token=TOKEN)).get_json("/a")
    assert [p for p, _ in peer.seen] == ["/a"]  # the token went nowhere else


def test_a_body_over_the_cap_is_an_error(peer: Peer) -> None:
    peer.routes["/big"] = (200, {}, b"[" + b"1," * 600 + b"1]")
    with pytest.raises(FetchError, match="answered more than 1000 bytes"):
        JsonClient(peer.base, max_body=1000).get_json("/big")


def test_not_json_is_an_error(peer: Peer) -> None:
    peer.routes["/html"] = (200, {}, b"<html>")
    with pytest.raises(FetchError, match="did not answer JSON"):
        JsonClient(peer.base).get_json("/html")


def test_a_slow_peer_costs_one_timeout(peer: Peer) -> None:
    peer.routes["/slow"] = (200, {}, b"{}")
    peer.delay = 1.0
    with pytest.raises(FetchError, match="did not answer within 0.3 s"):
        JsonClient(peer.base, timeout=0.3).get_json("/slow")


def test_nobody_listening_is_unreachable() -> None:
    port = free_port()
    with pytest.raises(FetchError, match=f"^127.0.0.1:{port}/x is unreachable"):
        JsonClient(f"http://127.0.0.1:{port}").get_json("/x")


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://h", "must be an http:// or https:// URL"),
    ("127.0.0.1:9090", "must be an http:// or https:// URL"),
    (f"http://admin:{PASSWORD}@127.0.0.1:9090", "must not carry credentials in the URL"),
    ("http://admin@127.0.0.1:9090", "must not carry credentials in the URL"),
    ("http://:9090", "must name a host"),
    ("http://h:99999", "invalid port"),
    ("http://h/?x=1", "must not have a query"),
])
def test_bad_urls_are_refused_naming_the_flag(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="^--prometheus") as info:
        check_url(url, "--prometheus")
    assert says in str(info.value)
    assert PASSWORD not in str(info.value)


def test_a_good_url_loses_its_trailing_slash() -> None:
    assert check_url("https://prom.example.com:9090/prefix/", "x") == \
        "https://prom.example.com:9090/prefix"


def test_credentials_never_print_their_secrets(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    creds = Credentials(user="fleet", password=PASSWORD, ca_file=str(ca))
    assert repr(creds) == f"Credentials(user=set, password=set, ca_file={str(ca)!r})"
    assert PASSWORD not in str(creds)
    assert creds.secrets == (PASSWORD,)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"token": TOKEN, "user": "u", "password": "p"}, "not both"),
    ({"user": "u"}, "user and password go together"),
    ({"password": "p"}, "user and password go together"),
    ({"user": "a:b", "password": "p"}, "must not contain ':'"),
    ({"token": "has space\n"}, "printable ASCII"),
    ({"ca_file": "/no/such/ca.pem"}, "ca_file"),
])
def test_bad_credentials_are_refused(kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        Credentials(**kwargs)
    assert TOKEN not in str(info.value)


def test_credentials_from_files_win_over_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\nignored\n")
    env = {"HYPERDASH_FLEET_PROMETHEUS_TOKEN": "from-the-env"}
    got = Credentials.from_sources("HYPERDASH_FLEET_PROMETHEUS", token_file=str(token_file),
                                   environ=env, flag="--prometheus")
    assert got.token == TOKEN
    assert Credentials.from_sources("HYPERDASH_FLEET_PROMETHEUS", environ=env).token == \
        "from-the-env"
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD)
    basic = Credentials.from_sources("HYPERDASH_FLEET_PROMETHEUS", user="fleet",
                                     password_file=str(password_file), environ=env)
    assert (basic.token, basic.user, basic.password) == (None, "fleet", PASSWORD)
    env_basic = Credentials.from_sources("P", environ={"P_USER": "u", "P_PASSWORD": "pw"})
    assert (env_basic.user, env_basic.password) == ("u", "pw")


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"user": "fleet"}, "--prometheus-password-file is required with --prometheus-user"),
    ({"token_file": "/no/such/file"}, "--prometheus-token-file: cannot read '/no/such/file'"),
])
def test_credential_flags_are_named_in_errors(kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Credentials.from_sources("HYPERDASH_FLEET_PROMETHEUS", environ={},
                                 flag="--prometheus", **kwargs)


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="--alertmanager-token-file: .* is empty"):
        Credentials.from_sources("X", token_file=str(empty), environ={},
                                 flag="--alertmanager")

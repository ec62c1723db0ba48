"""Every Python and shell snippet in README.md runs, as written, so the manual cannot drift.

Each fence tagged python, bash, sh or shell is extracted from README.md and run in a
subprocess with a deadline, on 127.0.0.1. A comment on the line before the fence (blank
lines between are allowed) says how:

- ``<!-- fragment -->`` or ``<!-- fragment: why -->``: not run (it needs your own code,
  or it is this very test suite); ``test_fragments_are_few_and_say_why`` keeps them honest.
- ``<!-- readme-test: OPTION ... -->`` with any of:
  - ``server``: a ``hyperdash demo`` serves on the snippet's port while it runs;
  - ``until-stopped``: it serves or follows until stopped (each command of a shell block on
    its own): it must print a line or open its port within the deadline, then SIGTERM must
    end it;
  - ``cwd=DIR``: run in a scratch copy of DIR (of the checkout), not in the checkout;
  - ``venv``: run with a fresh virtualenv first on PATH (``pip`` installs there).

Without options a snippet must end by itself with exit code 0 (shell blocks run under
``set -euo pipefail``). A shell block of ``$ command`` lines is a transcript: the commands
run in one shell (exit codes do not stop it) and what they print, stdout and stderr in
order, must match the lines shown, up to numbers and the width of runs of spaces.

Ports 8080 and 9090, wherever a snippet names them, become free ports, so nothing here
binds a well-known port or meets a server someone else runs.
"""

from __future__ import annotations

from support import free_port
import contextlib
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hyperdash_process import HyperdashProcess

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
LANGUAGES = {"python", "bash", "sh", "shell"}
PORTS = ("8080", "9090")
DEADLINE = 60.0  # seconds for one snippet (or one command of an until-stopped block)
START_DEADLINE = 30.0  # seconds for an until-stopped command to show it is up
OPTIONS = {"server", "until-stopped", "venv"}
ON_CI = os.environ.get("CI") == "true"

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[ \t]*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>fragment|readme-test)\b:?\s*(?P<rest>.*?)\s*-->\s*$")


@dataclass
class Snippet:
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    fragment: str | None = None  # the reason given, "" when none
    options: set[str] = field(default_factory=set)
    cwd: str | None = None

    @property
    def id(self) -> str:
        first = next((ln.strip() for ln in self.body.splitlines() if ln.strip()), "")
        return f"L{self.line}-{self.lang}-{first[:40]}"

    @property
    def transcript(self) -> bool:
        return self.lang != "python" and self.body.lstrip().startswith("$ ")


def snippets(text: str) -> list[Snippet]:
    """Every fenced block of README.md in LANGUAGES, with its marker."""
    lines = text.splitlines()
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = len(opening["indent"])
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"README.md:{i + 1}: fence never closed"
        if opening["lang"] in LANGUAGES:
            body = "\n".join(ln[indent:] for ln in lines[i + 1:end]) + "\n"
            snippet = Snippet(i + 1, opening["lang"], body)
            before = i - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            marker = MARKER.match(lines[before]) if before >= 0 else None
            if marker and marker["kind"] == "fragment":
                snippet.fragment = marker["rest"]
            elif marker:
                for option in marker["rest"].split():
                    if option.startswith("cwd="):
                        snippet.cwd = option[4:]
                    else:
                        assert option in OPTIONS, f"README.md:{i}: unknown option {option!r}"
                        snippet.options.add(option)
            found.append(snippet)
        i = end + 1
    return found


SNIPPETS = snippets(README.read_text())
RUN = [s for s in SNIPPETS if s.fragment is None]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def shape(line: str) -> str:
    """A line with its numbers and runs of spaces made generic, for transcripts."""
    return re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?", "N", line.rstrip()))


@dataclass
class Run:
    """What a snippet runs in: ports, environment, directory."""

    ports: dict[str, int]
    env: dict[str, str]
    cwd: Path

    def source(self, snippet: Snippet) -> str:
        return re.sub(r"\b(8080|9090)\b", lambda m: str(self.ports[m[1]]), snippet.body)


@pytest.fixture
def run_in(tmp_path: Path) -> Iterator[Callable[[Snippet], Run]]:
    servers: list[HyperdashProcess] = []

    def make(snippet: Snippet) -> Run:
        ports = {p: free_port() for p in PORTS}
        bin_dirs = [str(Path(sys.executable).parent)]
        if "venv" in snippet.options:
            venv = tmp_path / "venv"
            made = subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False,
                                  capture_output=True, text=True, timeout=120)
            assert made.returncode == 0, made.stderr
            bin_dirs.insert(0, str(venv / "bin"))
        env = {**os.environ, "PATH": os.pathsep.join([*bin_dirs, os.environ["PATH"]]),
               "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        env.pop("HYPERDASH_AUTH_TOKEN", None)
        cwd = REPO
        if snippet.cwd is not None:
            cwd = tmp_path / "cwd"
            shutil.copytree(REPO / snippet.cwd, cwd)
        elif snippet.lang == "python":
            cwd = tmp_path
        if "server" in snippet.options:
            server = HyperdashProcess("demo", "--port", str(ports["8080"]), "--warmup", "30")
            servers.append(server)
            assert server.url  # printed once it listens
        return Run(ports, env, cwd)

    yield make
    for server in servers:
        server.close()


def command(snippet: Snippet, source: str) -> list[str]:
    if snippet.lang == "python":
        return [sys.executable, "-c", source]
    return ["bash", "-c", "set -euo pipefail\n" + source]


def bounded_run(args: list[str], run: Run, *, merge_stderr: bool = False
                ) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a session of its own: on the deadline the whole group is
    killed, so a snippet's server never outlives its test (and never holds port 8080)."""
    proc = subprocess.Popen(args, cwd=run.cwd, env=run.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the snippet left in the background
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_to_the_end(snippet: Snippet, run: Run) -> None:
    done = bounded_run(command(snippet, run.source(snippet)), run)
    assert done.returncode == 0, (
        f"README.md:{snippet.line} exited {done.returncode}\n{done.stdout}\n{done.stderr}")


def run_transcript(snippet: Snippet, run: Run) -> None:
    source = run.source(snippet)
    commands: list[str] = []
    expected: list[str] = []
    for line in source.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        elif line.strip():
            expected.append(line)
    if "until-stopped" in snippet.options:
        # Started, stopped, then every line shown must be among what it printed.
        for cmd in commands:
            output = start_and_stop(snippet, run, cmd)
            printed = {shape(line) for line in output.splitlines()}
            for line in expected:
                assert shape(line) in printed, (line, output)
        return
    done = bounded_run(["bash", "-c", "\n".join(commands)], run, merge_stderr=True)
    assert [shape(ln) for ln in done.stdout.splitlines()] == [shape(ln) for ln in expected], (
        f"README.md:{snippet.line} printed:\n{done.stdout}")


def shell_commands(source: str) -> list[str]:
    """The commands of a shell block, one per logical line (continuations joined)."""
    joined = re.sub(r"\s*\\\n\s*", " ", source)
    return [ln for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def start_and_stop(snippet: Snippet, run: Run, source: str) -> str:
    """Run until it prints a line or opens a port of its own, then SIGTERM it; its output.

    Its stdout is a terminal, as when a user runs it: tools such as jq buffer a pipe.
    """
    own_ports = [] if "server" in snippet.options else list(run.ports.values())
    terminal, their_end = pty.openpty()
    proc = subprocess.Popen(command(snippet, source), cwd=run.cwd, env=run.env,
                            stdin=subprocess.DEVNULL, stdout=their_end, stderr=subprocess.PIPE,
                            start_new_session=True)
    os.close(their_end)
    printed = b""

    def read(timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the terminal is closed."""
        nonlocal printed
        if not select.select([terminal], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # EIO: every writer has exited
            return False
        printed += chunk
        return bool(chunk)

    try:
        deadline = time.monotonic() + START_DEADLINE
        while not printed.strip() and not any(listening(p) for p in own_ports):
            if proc.poll() is not None:
                break
            assert time.monotonic() < deadline, (
                f"README.md:{snippet.line}: nothing printed or listening after "
                f"{START_DEADLINE}s: {source}")
            read(0.1)  # wakes on output; otherwise polls the ports every 0.1 s
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        _, error_bytes = proc.communicate(timeout=15)
        drain_until = time.monotonic() + 5
        while time.monotonic() < drain_until and read(0.2):
            pass
        code = proc.returncode
        errors = error_bytes.decode()
        output = printed.decode().replace("\r\n", "\n")
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), (
            f"README.md:{snippet.line}: {source} exited {code}\n{output}\n{errors}")
        assert "Traceback" not in errors, errors
        assert output.strip() or own_ports, f"README.md:{snippet.line}: printed nothing"
        return output + errors
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        os.close(terminal)
        if proc.stderr is not None:
            proc.stderr.close()


def needs(snippet: Snippet) -> None:
    """Skip, off CI, a snippet whose tool is not installed here (on CI: fail)."""
    for tool in ("promtool", "prometheus", "jq", "curl", "npm"):
        if re.search(rf"(^|[\s|;(]){tool}\b", snippet.body) and shutil.which(tool) is None:
            if ON_CI:
                pytest.fail(f"{tool} is not on PATH")
            pytest.skip(f"{tool} is not on PATH")


def marks(snippet: Snippet) -> list[pytest.MarkDecorator]:
    # A snippet that builds and installs the package runs once, with the packaging tests.
    return [pytest.mark.packaging] if "venv" in snippet.options else []


@pytest.mark.parametrize(
    "snippet", [pytest.param(s, id=s.id, marks=marks(s)) for s in RUN])
def test_readme_snippet_runs(snippet: Snippet, run_in) -> None:
    needs(snippet)
    run = run_in(snippet)
    if snippet.transcript:
        run_transcript(snippet, run)
    elif "until-stopped" in snippet.options:
        sources = ([run.source(snippet)] if snippet.lang == "python"
                   else shell_commands(run.source(snippet)))
        for source in sources:
            start_and_stop(snippet, run, source)
    else:
        run_to_the_end(snippet, run)


def test_every_snippet_is_found():
    # The parser and the file agree: as many fences of these languages as the raw text has.
    raw = re.findall(r"^ *```(python|bash|sh|shell)\s*$", README.read_text(), re.M)
    assert len(SNIPPETS) == len(raw) > 0


def test_fragments_are_few_and_say_why():
    fragments = [s for s in SNIPPETS if s.fragment is not None]
    assert len(fragments) <= len(SNIPPETS) // 2, "most snippets must run"
    for s in fragments:
        assert s.fragment, f"README.md:{s.line}: say why it is a fragment: <!-- fragment: ... -->"


def test_the_parser_reads_markers_and_indented_fences():
    text = "\n".join([
        "<!-- fragment: your daemon -->", "```python", "run(exporter)", "```",
        "1. step", "   <!-- readme-test: until-stopped cwd=grafana -->", "",
        "   ```sh", "   prometheus --a \\", "      --b", "   ```",
        "```js", "ignored()", "```", "```bash", "echo 8080", "```",
    ])
    first, second, third = snippets(text)
    assert (first.fragment, first.body) == ("your daemon", "run(exporter)\n")
    assert (second.options, second.cwd) == ({"until-stopped"}, "grafana")
    assert shell_commands(second.body) == ["prometheus --a --b"]
    assert (third.fragment, third.options, third.line) == (None, set(), 15)
    assert Run({"8080": 1234, "9090": 1}, {}, REPO).source(third) == "echo 1234\n"
    assert shape("18:30:01  active   8") == shape("09:00:59 active 12")

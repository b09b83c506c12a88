"""Real servers for the serving tests: `tnlm serve` in a subprocess on a free loopback port."""

from __future__ import annotations

import http.client as http_client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'tnlm[serve]'")

REPO = Path(__file__).resolve().parents[2]
_READY = re.compile(r"serving \S+ at (http://[\d.]+:\d+)/v1")


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
    stderr: list[str] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def _drain(proc: subprocess.Popen, lines: list[str], ready: threading.Event) -> None:
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if _READY.search(line):
            ready.set()
    ready.set()


def _ctrl_c_as_in_a_terminal() -> None:
    """A test run started in the background (`pytest &`) ignores SIGINT and its children inherit that;
    the server must see Ctrl-C as a user's terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def running_server(*args: str, env: dict[str, str] | None = None, startup_s: float = 180) -> Iterator[Server]:
    """`tnlm serve ARGS --port 0` (one PyTorch thread); yields once it listens, stops it after."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    cmd = [sys.executable, "-c", "from tnlm.cli.main import run; run()", "serve", *args, "--port", "0", "--threads", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=REPO,
                            preexec_fn=_ctrl_c_as_in_a_terminal)  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()
    threading.Thread(target=_drain, args=(proc, lines, ready), daemon=True).start()
    deadline = time.monotonic() + startup_s
    while not ready.wait(0.2) and time.monotonic() < deadline:
        pass
    found = next((m for m in map(_READY.search, lines) if m), None)
    if found is None:
        proc.kill()
        raise RuntimeError("the server did not start:\n" + "\n".join(lines[-30:]))
    server = Server(found.group(1), proc, lines)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> dict:
        return self.json()["error"]


def http(server: Server, method: str, path: str, body: bytes | dict | None = None, *, key: str | None = None,
         headers: dict[str, str] | None = None, timeout: float = 120) -> Reply:  # fmt: skip
    """One raw HTTP request (the bytes exactly as given; a dict is sent as JSON)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http_client.HTTPConnection(host, int(port), timeout=timeout)
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def open_stream(server: Server, body: dict, *, key: str | None) -> tuple[http_client.HTTPConnection, http_client.HTTPResponse]:
    """POST /v1/completions and return once the response headers are in (the body still streaming)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http_client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(), headers=headers)
    return conn, conn.getresponse()


def metric(server: Server, name: str, *, key: str | None = None) -> float:
    """One sample of /metrics (a name with labels is given as it appears, e.g. 'x_total{a="b"}')."""
    text = http(server, "GET", "/metrics", key=key).body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} is not in /metrics")

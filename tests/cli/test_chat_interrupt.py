"""`tnlm generate` and `tnlm chat` on real processes: Ctrl-C stops generate (exit 130); in chat it
stops the reply and returns to the prompt, and Ctrl-C at the prompt ends the chat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.processes import (
    as_in_a_terminal,
    marked_env,
    scaled,
    stop_limit,
    wait_gone,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process groups from /proc")


class Reader:
    """Collects a pipe's text in a thread, so a test can wait for a piece of output."""

    def __init__(self, stream) -> None:
        import threading

        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        while chunk := stream.read(1):
            self.text += chunk

    def wait_chars(self, n: int, *, after: int = 0, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while len(self.text) < after + n:
            assert time.monotonic() < deadline, f"no output after {self.text[-500:]!r}"
            time.sleep(0.02)

    def join(self, timeout: float = 30.0) -> None:
        """Waits for the pipe's end (the process has exited), so that `text` is all of it."""
        self._thread.join(timeout)

    def wait_for(self, piece: str, *, after: int = 0, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + scaled(timeout)
        while (at := self.text.find(piece, after)) < 0:
            assert time.monotonic() < deadline, f"no {piece!r} in {self.text[-500:]!r}"
            time.sleep(0.02)
        return at + len(piece)


def model_process(*args: str, cwd: Path) -> tuple[subprocess.Popen, Reader, Reader]:
    env, marker = marked_env()
    proc = subprocess.Popen([sys.executable, "-m", "tnlm", *args], cwd=cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=0,
                            start_new_session=True, env={**env, "PYTHONUNBUFFERED": "1"}, preexec_fn=as_in_a_terminal)  # noqa: PLW1509 (one signal reset)
    proc.marker = marker
    return proc, Reader(proc.stdout), Reader(proc.stderr)


def test_generate_ctrl_c_stops_the_text_and_exits_130(tmp_path: Path) -> None:
    proc, out, err = model_process("generate", "tnl-tiny", "Once upon a time", "-n", "100000", cwd=tmp_path)
    proc.stdin.close()
    out.wait_chars(5, timeout=300)  # text is streaming (TransNormer has no length limit)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=stop_limit()) in (130, -signal.SIGINT)
    out.join(), err.join()
    assert out.text.endswith("\n") and err.text.strip().splitlines()[-1] == "interrupted", err.text
    assert "Traceback" not in err.text, err.text
    wait_gone(proc.marker, timeout=5)


def test_chat_ctrl_c_stops_the_reply_and_ctrl_c_at_the_prompt_exits(tmp_path: Path) -> None:
    proc, out, err = model_process("chat", "tnl-tiny", "-n", "100000", cwd=tmp_path)
    at = out.wait_for("you> ", timeout=300)
    proc.stdin.write("tell me a long story\n")
    at = out.wait_for("assistant> ", after=at)
    out.wait_chars(5, after=at)  # the reply is streaming
    os.killpg(proc.pid, signal.SIGINT)
    err.wait_for("[reply stopped")
    at = out.wait_for("you> ", after=at)  # back at the prompt, the chat goes on
    proc.stdin.write("/reset\n")
    err.wait_for("[conversation cleared]")
    out.wait_for("you> ", after=at)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at the prompt ends the chat
    assert proc.wait(timeout=stop_limit()) == 0, err.text
    assert "Traceback" not in err.text, err.text
    wait_gone(proc.marker, timeout=5)

"""Ctrl-C for long work: stop within seconds, leave no process behind, say how to resume.

A terminal's Ctrl-C sends SIGINT to every process of its foreground process group: the command and
all of its worker processes. These tools make that safe; every long command uses them.

- `worker_pool(n, initializer=..., initargs=...)`: a `multiprocessing` pool for library code that
  fans out over processes. Its workers ignore SIGINT, so only the parent reacts: no worker prints a
  traceback or dies in the middle of a queue operation (which is what makes `Pool.terminate()` hang).
  On Linux a worker also dies with its parent, so none outlives a killed command. When the `with`
  block ends, normally or by an exception (KeyboardInterrupt included), the workers are terminated
  and reaped before the exception goes on.
- `call_isolated(fn, *args, **kwargs)`: for work Ctrl-C cannot stop from inside: native code that
  never checks for it (the BPE trainer of `tokenizers`) or a third-party process pool (datatrove's
  local executor, whose workers would each print a traceback and could hang the pool). It runs `fn`
  in a forked child that leads its own session, so Ctrl-C at the terminal reaches only the caller,
  which then kills the child's whole process group and raises KeyboardInterrupt. The result or the
  exception comes back through a pipe, so `fn` must return something picklable.
- `on_interrupt(hint)`: decorates a CLI command. Ctrl-C anywhere in it ends the command with
  `Interrupted(hint)`, which `tnlm` prints as one line, `interrupted: <hint>`, exiting with 130:

      @data_app.command("run")
      @on_interrupt("rerun the same command to resume; finished shards are kept")
      def run(config: Path) -> None: ...

  A command without it still stops cleanly and exits 130, printing just `interrupted`.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """A command stopped by Ctrl-C; `hint` says how to resume (or None)."""

    def __init__(self, hint: str | None = None) -> None:
        super().__init__(hint or "interrupted")
        self.hint = hint


def on_interrupt(hint: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a command so that Ctrl-C ends it with `Interrupted(hint)`."""

    def decorate(command: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt as err:
                raise Interrupted(hint) from err

        return wrapper

    return decorate


def _block_sigint() -> set[int] | None:
    """Hold Ctrl-C back (it stays pending) in this thread; returns the previous mask."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        return None
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}))


def _restore_sigint_mask(previous: set[int] | None) -> None:
    if previous is not None and signal.SIGINT not in previous:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending Ctrl-C is raised now


def _die_with_parent(parent: int | None) -> None:
    """Linux: the kernel kills this process when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _start_worker(parent: int | None, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _restore_sigint_mask(set())  # the parent blocked SIGINT while forking; a pending one is now ignored
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def worker_pool(
    processes: int,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    start_method: str | None = None,
) -> Iterator[Pool]:
    """A multiprocessing Pool that Ctrl-C stops cleanly (see the module docstring). The workers are
    terminated when the block ends, so consume every result inside it."""
    context = multiprocessing.get_context(start_method)
    parent = os.getpid() if context.get_start_method() == "fork" else None
    previous = _block_sigint()  # no Ctrl-C while workers start: they inherit the mask
    pool: Pool | None = None
    try:
        pool = context.Pool(processes, initializer=_start_worker, initargs=(parent, initializer, initargs))
        _restore_sigint_mask(previous)
        yield pool
    finally:
        _block_sigint()  # a second Ctrl-C must not cut the teardown short
        try:
            if pool is not None:
                pool.terminate()
                pool.join()
        finally:
            _restore_sigint_mask(previous)


def _isolated_child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    os.setsid()  # a session of its own: the terminal's Ctrl-C no longer reaches it or its workers
    _die_with_parent(None)
    try:
        outcome = ("value", fn(*args, **kwargs))
    except BaseException as err:  # handed to the parent
        outcome = ("error", err)
    try:
        conn.send(outcome)
    except Exception as err:  # a result or an exception that does not pickle
        conn.send(("error", RuntimeError(f"{type(err).__name__}: {err}")))
    conn.close()


def _kill_group(process: Any) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.join(wait)
        if not process.is_alive():
            return


def _outcome(receiver: Any, process: Any) -> tuple[str, Any]:
    """What the child sent, read while it runs (a large result would fill the pipe and block it)."""
    while not receiver.poll(0.1):  # returns to Python often, so a Ctrl-C is raised here promptly
        pass
    try:
        return receiver.recv()
    except EOFError:  # it died without a word
        process.join()
        return "error", RuntimeError(f"the worker process died (exit code {process.exitcode})")


def call_isolated(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a forked child of its own session; its result is returned and its
    exception raised here. Ctrl-C kills the child's whole process group and raises KeyboardInterrupt
    (see the module docstring). Where fork or sessions are missing (Windows), fn runs here."""
    if not hasattr(os, "setsid") or "fork" not in multiprocessing.get_all_start_methods():
        return fn(*args, **kwargs)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_isolated_child, args=(sender, fn, args, kwargs), daemon=False)
    process.start()
    sender.close()
    try:
        kind, value = _outcome(receiver, process)
    except BaseException:
        previous = _block_sigint()  # a second Ctrl-C must not cut this short
        try:
            _kill_group(process)
        finally:
            _restore_sigint_mask(previous)
        raise
    process.join()
    if kind == "error":
        raise value
    return value

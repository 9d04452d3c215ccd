"""A TensorFlow process that is imported once and forks a fresh worker for each request.

Every TensorFlow worker (export, diff, training) used to be a new ``python -m`` process, and
importing TensorFlow, Keras and tf2onnx was most of its time on a small model.  The fork
server pays that import once per orchestrator process: it is started on the first request
(``python -m pipeline.export.forkserver``), imports those libraries without running any
TensorFlow op (so no TF thread pool or device exists yet), and for each request forks a child
that runs the worker module exactly as ``python -m <module> <args>`` would, with its own
output log, working directory and environment.  Each worker is still its own process: what a
model does to TensorFlow's state, memory or signals dies with it.

A server started with one environment never serves another (TensorFlow reads some variables
at import; only :data:`VOLATILE_ENV` may differ, and each worker gets its caller's environment
exactly), and anything wrong with the server falls back to a plain new process, so the
server only ever saves time.  The CLI starts it before importing torch, so that the two
imports overlap.  It sits in the caller's process group, so killing that group
(the migration scheduler's timeout) kills the server and its workers too.

Protocol, one JSON line each way on the server's stdin/stdout: ``{"module", "args", "log",
"cwd", "env"}`` in; ``{"pid": N}`` when the worker started, then ``{"returncode": N}`` when it
ended (negative: killed by that signal, as :class:`subprocess.Popen` reports it).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PRELOAD = ("tensorflow", "keras", "tf2onnx", "onnx")
"""What the server imports before it forks: the imports every worker starts with."""

VOLATILE_ENV = frozenset({"PYTEST_CURRENT_TEST", "PWD", "OLDPWD", "_"})
"""Variables that change between calls but no import reads: a change in them alone does not
restart the server (the worker still gets them, exactly as passed)."""

READY = "ready"
_START_TIMEOUT = 300.0


class ForkServerError(RuntimeError):
    """The fork server could not start or stopped answering; the caller spawns instead."""


class WorkerTimeout(Exception):
    """A worker ran past its timeout and was killed."""


class _LineReader:
    """Reads whole lines from a pipe with a deadline (select on the raw descriptor, so no
    line can hide in a buffer that select does not see)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""

    def readline(self, deadline: float | None) -> str:
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._fd], [], [], wait)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise ForkServerError("the fork server closed its pipe")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


class ForkServer:
    """The orchestrator's handle on one fork server process (see the module docstring)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = _import_env(env)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        assert self._proc.stdout is not None
        self._reader = _LineReader(self._proc.stdout.fileno())
        self._ready = False  # its imports run while the caller goes on; run() waits for them

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            line = self._reader.readline(time.monotonic() + _START_TIMEOUT)
        except TimeoutError:
            raise ForkServerError("the fork server did not start") from None
        if line != READY:
            raise ForkServerError(f"the fork server could not preload: {line}")
        self._ready = True

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self._proc.poll() is None

    def close(self) -> None:
        """Stop the server.  It is idle or still importing (no caller is in :meth:`run`),
        so nothing is lost; a worker it started would run on to its end."""
        self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()

    def run(
        self,
        module: str,
        args: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        timeout: float | None,
    ) -> int:
        """Run ``python -m module *args`` with ``env`` (which must match the server's but for
        :data:`VOLATILE_ENV`) as a forked worker, its output in ``log``; return its
        exit code (negative: the signal that killed it).  Raises :class:`WorkerTimeout` after
        killing a worker that ran past ``timeout`` seconds, and :class:`ForkServerError` if the
        server fails (a worker it had started is killed first): the caller may then spawn
        the worker itself, from the start."""
        request = {
            "module": module,
            "args": list(args),
            "log": str(log),
            "cwd": os.getcwd(),
            "env": dict(env),
        }
        assert self._proc.stdin is not None
        self._wait_ready()
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            started = json.loads(self._reader.readline(time.monotonic() + _START_TIMEOUT))
        except (OSError, TimeoutError, ValueError) as err:
            raise ForkServerError(f"the fork server did not start the worker: {err}") from None
        if "pid" not in started:
            raise ForkServerError(f"the fork server could not fork: {started.get('error')}")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            line = self._reader.readline(deadline)
        except TimeoutError:
            _kill(started["pid"])
            # The server reaps it and answers; a server lost meanwhile changes nothing: the
            # worker timed out, and must not be run again.
            with contextlib.suppress(ForkServerError):
                self._reader.readline(None)
            raise WorkerTimeout from None
        except ForkServerError:
            _kill(started["pid"])  # the server died under it: the caller runs it anew
            raise
        return int(json.loads(line)["returncode"])


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended just now
        os.kill(pid, signal.SIGKILL)


_server: ForkServer | None = None
_lock = threading.Lock()


def run_module(
    module: str,
    args: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    timeout: float | None,
) -> int:
    """Run ``python -m module *args`` with ``env``, its stdout and stderr in ``log``, and
    return its exit code (negative: killed by that signal).

    The worker is forked from this process's fork server when one can serve ``env``, else
    spawned as a new process; the result is the same.  Raises :class:`WorkerTimeout` when it
    ran past ``timeout`` seconds (it is killed).  Set ``TF2TORCH_FORKSERVER=0`` to always spawn.
    """
    if _enabled(env) and _lock.acquire(blocking=False):
        # One worker at a time per server; a concurrent caller spawns its own.
        try:
            server = _server_for(env)
            if server is not None:
                try:
                    return server.run(module, args, log, env, timeout)
                except ForkServerError:
                    _drop_server()
        finally:
            _lock.release()
    return _spawn(module, args, log, env, timeout)


def prestart(env: Mapping[str, str]) -> None:
    """Start the fork server for ``env`` now, if none serves it, without waiting for its
    imports: a caller about to import torch overlaps the two imports (each takes seconds)."""
    if _enabled(env) and _lock.acquire(blocking=False):
        try:
            _server_for(env)
        finally:
            _lock.release()


def _enabled(env: Mapping[str, str]) -> bool:
    return env.get("TF2TORCH_FORKSERVER", "1") != "0"


def _server_for(env: Mapping[str, str]) -> ForkServer | None:
    global _server
    if _server is not None and (_server.env != _import_env(env) or not _server.alive()):
        _drop_server()
    if _server is None:
        try:
            _server = ForkServer(env)
        except OSError:
            return None
    return _server


def _import_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in VOLATILE_ENV}


def _drop_server() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None


atexit.register(_drop_server)


def _spawn(
    module: str, args: Sequence[str], log: Path, env: Mapping[str, str], timeout: float | None
) -> int:
    with log.open("w") as out:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise WorkerTimeout from None
    return proc.returncode


def _run_child(request: dict[str, Any]) -> int:
    """In the forked child: become ``python -m module *args`` and return its exit code."""
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    # The server's protocol pipes are fds 0 and 1: replacing them also cuts the child off.
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["args"]]
    sys.path[0] = request["cwd"]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


def main() -> int:
    """Entry point of ``python -m pipeline.export.forkserver``: preload, then serve."""
    out = sys.stdout
    try:
        for name in PRELOAD:
            __import__(name)
    except Exception as err:  # the caller falls back to spawning, and says nothing
        print(f"{type(err).__name__}: {err}".replace("\n", " "), file=out, flush=True)
        return 1
    print(READY, file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            pid = os.fork()
        except OSError as err:
            print(json.dumps({"error": str(err)}), file=out, flush=True)
            continue
        if pid == 0:
            # Leaving main by SystemExit shuts the child's interpreter down as a worker's
            # would (atexit handlers, flushed streams).
            sys.exit(_run_child(request))
        print(json.dumps({"pid": pid}), file=out, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The temporary Prefect server of a build, started by advbench rather than by Prefect.

Prefect's own ephemeral server gives up only after its start-up timeout when the server cannot
start (its child exits with uvicorn's code 3, which Prefect takes for a busy port and retries),
and nothing stops that child when the build is killed. Here the parent reports a failed start
in one line as soon as the child exits, and the child (``python -m advbench.prefect_server``)
watches its parent and exits with it, even after SIGKILL.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from advbench.errors import BuildError
from advbench.workers import die_with_parent

# What Prefect sets for its ephemeral server: no UI, only the services a local run needs.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}
LOG_NAME = "server.log"
_LOG_LIMIT = 1 << 20  # past this, the log starts afresh
_PORT_ATTEMPTS = 3  # the port is free when chosen, but another process may take it first
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


class PrefectServerError(BuildError):
    """The temporary Prefect server could not be started."""


def ensure_home(home: Path) -> None:
    """Create Prefect's home (parents too) and prove it writable: its SQLite file goes there."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PrefectServerError(
            f"cannot use {home} as Prefect's home ({reason}); "
            "set PREFECT_HOME to a writable folder"
        ) from None


@contextmanager
def temporary_server(home: Path, *, timeout: float = 60.0) -> Iterator[str]:
    """Run a Prefect server on 127.0.0.1 for the duration; yield its API URL.

    ``PREFECT_API_URL`` is set in ``os.environ`` meanwhile, so the flow and any worker process
    started during the build use this server; the environment is restored on exit.
    """
    ensure_home(home)
    proc, url = _start(home, timeout)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    _refresh_prefect_settings()
    try:
        yield url
    finally:
        _drain_prefect_workers(timeout=10.0)
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        _refresh_prefect_settings()
        stop(proc)


def _refresh_prefect_settings() -> None:
    """Prefect reads the environment once, at import: re-read it if Prefect is already loaded."""
    context = sys.modules.get("prefect.context")
    if context is not None:
        context.refresh_global_settings_context()


def _drain_prefect_workers(*, timeout: float) -> None:
    """Send the logs and events Prefect still queues to the server before it stops.

    Otherwise they are lost (task runs are recorded from events), and Prefect keeps retrying
    the stopped server for minutes. Done in a thread of its own: Prefect's drain only blocks,
    as needed here, where no event loop runs.
    """
    workers = [getattr(module, name) for module_name, name in
               (("prefect.logging.handlers", "APILogWorker"), ("prefect.events.worker",
                                                               "EventsWorker"))
               if (module := sys.modules.get(module_name)) is not None]
    if workers:
        thread = threading.Thread(
            target=lambda: [w.drain_all(timeout=timeout, at_exit=False) for w in workers],
            name="drain-prefect-workers", daemon=True)
        thread.start()
        thread.join(timeout * len(workers) + 1)


def _start(home: Path, timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    log_path = home / LOG_NAME
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    deadline = time.monotonic() + timeout
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        # Appended to, so that concurrent builds sharing a home do not clobber each other's log.
        with open(log_path, "ab" if _size(log_path) < _LOG_LIMIT else "wb") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} build {os.getpid()} "
                      f"port {port}\n".encode())
            log.flush()
            offset = log.tell()
            # Its own session: a Ctrl-C in the terminal reaches the build, which stops the
            # server in order, instead of killing the server under the build.
            proc = subprocess.Popen(
                [sys.executable, "-m", "advbench.prefect_server",
                 "--parent-pid", str(os.getpid()), "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        try:
            while (code := proc.poll()) is None:
                if _healthy(port):
                    return proc, f"http://127.0.0.1:{port}/api"
                if time.monotonic() > deadline:
                    raise PrefectServerError(
                        _failure(f"did not answer within {timeout:g} s", log_path, offset))
                time.sleep(0.1)
        except BaseException:  # the timeout, or Ctrl-C while waiting
            stop(proc)
            raise
        if "address already in use" not in _read_from(log_path, offset):
            break
    raise PrefectServerError(_failure(f"exited with code {code}", log_path, offset))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    # http.client, not urllib: a proxy set in the environment must not see local requests.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _failure(what: str, log_path: Path, offset: int) -> str:
    """One line: what failed, the most telling line of this start's log, where the log is."""
    lines = [x.strip() for x in _read_from(log_path, offset).splitlines() if x.strip()]
    errors = [x for x in lines if _EXCEPTION_LINE.match(x)]
    telling = errors[-1] if errors else lines[-1] if lines else "the log is empty"
    return f"the temporary Prefect server did not start ({what}): {telling} (log: {log_path})"


def stop(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL: a graceful stop lets SQLite close cleanly."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


# --- the child: dies with the build (advbench.workers.die_with_parent) ---------------------


def main(argv: list[str] | None = None) -> None:
    """Serve Prefect's API on 127.0.0.1:PORT until the parent stops us or exits."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advbench.prefect_server")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    os.environ.update(SERVER_ENV)
    import uvicorn

    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1",
                port=args.port, log_level="error", lifespan="on")


if __name__ == "__main__":
    main()

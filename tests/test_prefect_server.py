"""The temporary Prefect server: starts on a fresh machine, fails in one line, dies with the build.

These run the real ``advbench`` command in a subprocess with a clean environment, as a user
would on a new machine. A server start takes seconds, so the first build's (migrated) Prefect
home is shared by the later tests.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_mimic_root, write_config

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

SERVER_MODULE = "advbench.prefect_server"


def _advbench() -> list[str]:
    script = Path(sys.executable).with_name("advbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "advbench.cli"]


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: an empty HOME, no cache folder, no Prefect settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in ("ADVBENCH_CACHE", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a live process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every process under ``root``: pid → start time (to tell a reused pid apart)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    found, todo = {}, [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            found[pid] = start
            todo.append(pid)
    return found


def _servers_of(parent: int) -> set[int]:
    """The pids of the advbench Prefect servers started by ``parent`` (the test session's
    own, from the ``prefect_harness`` fixture, may be among them)."""
    found = set()
    for pid in _descendants(parent):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if SERVER_MODULE.encode() in args and str(parent).encode() in args:
            found.add(pid)
    return found


def _server_of(parent: int) -> int | None:
    """The pid of the advbench Prefect server started by ``parent`` (a build), if one runs."""
    return min(_servers_of(parent), default=None)


def _still_running(pid: int, start: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and stat[2] == start


@pytest.fixture(scope="module")
def first_build(tmp_path_factory):
    """``advbench build`` as the very first command of a user whose HOME is empty."""
    tmp = tmp_path_factory.mktemp("first-build")
    home = tmp / "home"
    home.mkdir()
    config = write_config(tmp / "build.yaml", make_mimic_root(tmp / "mimic"), tmp / "out")
    t0 = time.perf_counter()
    result = subprocess.run([*_advbench(), "build", str(config)], cwd=tmp, env=_clean_env(home),
                            capture_output=True, text=True, timeout=300)
    return home, tmp / "out", result, time.perf_counter() - t0


def test_build_as_first_command_with_empty_home_succeeds(first_build):
    home, out, result, _ = first_build
    assert result.returncode == 0, result.stderr
    assert (out / "test-release" / "1.0.0" / "manifest.json").is_file()
    assert "inputs 11: accepted 4" in result.stdout
    prefect_home = home / ".cache" / "advbench" / "prefect"
    assert (prefect_home / "prefect.db").is_file()
    assert (prefect_home / "server.log").is_file()


@pytest.mark.parametrize("case", ["home_under_a_file", "database_cannot_open"])
def test_server_that_cannot_start_fails_in_one_clear_line_soon(case, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    config = write_config(tmp_path / "build.yaml", make_mimic_root(tmp_path / "mimic"),
                          tmp_path / "out")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    if case == "home_under_a_file":
        extra = {"PREFECT_HOME": str(blocker / "prefect")}
        expected = f"cannot use {blocker / 'prefect'} as Prefect's home"
    else:  # the home is fine, but the server's SQLite file cannot be opened: the server exits
        extra = {"PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{blocker}/x.db"}
        expected = "unable to open database file"
    t0 = time.perf_counter()
    result = subprocess.run([*_advbench(), "build", str(config)], cwd=tmp_path,
                            env=_clean_env(home, **extra), capture_output=True, text=True,
                            timeout=120)
    seconds = time.perf_counter() - t0
    assert result.returncode == 1, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert seconds < 30
    if case == "database_cannot_open":
        assert "server.log" in lines[0]


def test_killed_build_leaves_no_process_and_the_same_build_then_completes(first_build, tmp_path):
    home = first_build[0]  # its Prefect home is already migrated: a faster start
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "kill-test", "version": "1.0.0", "seed": 0, "output": "out", "shard_size": 8,
        "sources": [{"kind": "phantom-cxr", "studies": 160, "size": 256}],
    }))
    command = [*_advbench(), "build", str(config)]
    env = _clean_env(home)
    with open(tmp_path / "first.log", "wb") as log:
        build = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        server = None
        # Up to the moment shards are being written: the server is up and build work happened.
        while not (server and any((tmp_path / "out").rglob("*.parquet*"))):
            assert build.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "no server or no shard within 120 s"
            server = server or _server_of(build.pid)
            time.sleep(0.1)
        family = _descendants(build.pid)
        assert server in family
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait()

    deadline = time.monotonic() + 10
    while (left := [p for p, start in family.items() if _still_running(p, start)]):
        assert time.monotonic() < deadline, f"still running 10 s after the kill: {left}"
        time.sleep(0.1)

    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "kill-test" / "1.0.0" / "manifest.json").read_text())
    assert manifest["counts"] == {"inputs": 160, "accepted": 160, "rejected": 0, "failed": 0}


def _api_url_and_health() -> tuple[str | None, int]:
    """In a spawned worker: the API URL it inherited, and what the server says there."""
    import http.client
    from urllib.parse import urlsplit

    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return None, 0
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", f"{parts.path}/health")
    return url, conn.getresponse().status


def test_temporary_server_reaches_spawned_workers_then_stops_and_restores_env(
    first_build, tmp_path, monkeypatch
):
    from advbench.prefect_server import temporary_server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    before = _servers_of(os.getpid())
    with temporary_server(_warm_home(first_build, tmp_path), timeout=120) as url:
        assert os.environ["PREFECT_API_URL"] == url
        (server,) = _servers_of(os.getpid()) - before
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            assert pool.apply(_api_url_and_health) == (url, 200)
    assert "PREFECT_API_URL" not in os.environ
    assert _proc_stat(server) is None


def _warm_home(first_build, tmp_path: Path) -> Path:
    """A copy of the first build's Prefect home: migrated, so a server starts in seconds."""
    home = tmp_path / "prefect"
    shutil.copytree(first_build[0] / ".cache" / "advbench" / "prefect", home)
    return home


def test_server_started_on_a_port_taken_meanwhile_retries_on_another(
    first_build, tmp_path, monkeypatch
):
    import advbench.prefect_server as ps

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, ps._free_port()])
        monkeypatch.setattr(ps, "_free_port", lambda: next(ports))
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        before = _servers_of(os.getpid())
        with ps.temporary_server(_warm_home(first_build, tmp_path), timeout=120) as url:
            assert f":{busy}/" not in url
            assert len(_servers_of(os.getpid()) - before) == 1


def test_server_that_does_not_answer_in_time_is_stopped_and_reported_in_one_line(tmp_path):
    from advbench.prefect_server import PrefectServerError, temporary_server

    before = _servers_of(os.getpid())
    t0 = time.perf_counter()
    with pytest.raises(PrefectServerError) as raised:
        with temporary_server(tmp_path / "prefect", timeout=0.5):
            pass
    assert time.perf_counter() - t0 < 10
    message = str(raised.value)
    assert "\n" not in message
    assert "did not answer within 0.5 s" in message
    assert str(tmp_path / "prefect" / "server.log") in message
    assert _servers_of(os.getpid()) <= before


def test_server_url_set_by_the_user_wins_and_nothing_is_started(
    prefect_harness, mimic_root, tmp_path, monkeypatch
):
    import advbench.prefect_server
    from advbench.config import load_config
    from advbench.orchestration import run_build

    def no_server(*args, **kwargs):
        raise AssertionError("a server was started although one was set")

    monkeypatch.setattr(advbench.prefect_server, "temporary_server", no_server)
    before = _servers_of(os.getpid())
    cfg = load_config(write_config(tmp_path / "build.yaml", mimic_root, tmp_path / "out"))
    summary = run_build(cfg)
    assert summary.counts["accepted"] == 4
    assert _servers_of(os.getpid()) == before

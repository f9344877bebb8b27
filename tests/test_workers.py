"""The worker pool: at most ``workers`` shards at once, in-process and through the flow, and
sources made once per worker instead of once per shard."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advbench.config import load_config
from advbench.release.shards import RowFailure, ShardWriter
from advbench.workers import RUNNERS, InlineExecutor, WorkerCache, default_workers
from tests.conftest import write_config


class Concurrency:
    """Wraps process_shard: counts how many run at once (threads share this counter)."""

    def __init__(self, real):
        self.real, self.now, self.most, self.lock = real, 0, 0, threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.3)
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


def _cfg(tmp_path, root, **top):
    return load_config(write_config(tmp_path / "b.yaml", root, tmp_path / "out",
                                    top={"runner": "threads", "shard_size": 1, **top}))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_in_process_build_runs_at_most_workers_shards_at_once(mimic_root, tmp_path,
                                                              monkeypatch, workers):
    import advbench.pipeline as pipeline

    probe = Concurrency(pipeline.process_shard)
    monkeypatch.setattr(pipeline, "process_shard", probe)
    cfg = _cfg(tmp_path, mimic_root, workers=workers)  # 8 shards of one study
    summary = pipeline.build_release(cfg)
    assert summary.counts["accepted"] == 4
    assert probe.most == workers


def test_flow_runs_at_most_workers_shard_tasks_at_once(prefect_harness, mimic_root, tmp_path,
                                                       monkeypatch):
    import flows.build

    probe = Concurrency(flows.build.process_shard)
    monkeypatch.setattr(flows.build, "process_shard", probe)
    cfg = _cfg(tmp_path, mimic_root, workers=2)
    summary = flows.build.build_flow(cfg)
    assert summary.counts["accepted"] == 4
    assert probe.most == 2


def test_sources_are_made_once_per_worker_not_per_shard(mimic_root, tmp_path, monkeypatch):
    import advbench.pipeline as pipeline
    from advbench.workers import WORKER_CACHE

    made = []
    real = pipeline.make_source
    monkeypatch.setattr(pipeline, "make_source",
                        lambda config, index: made.append(index) or real(config, index))
    WORKER_CACHE.clear()
    cfg = _cfg(tmp_path, mimic_root, workers=1)
    pipeline.build_release(cfg)
    plan_made = 1  # planning makes the source once in the main process
    assert len(made) == plan_made + 1  # and the one worker once for its 8 shards


def test_worker_cache_makes_each_key_once():
    cache = WorkerCache()
    calls = []
    assert cache.get("a", lambda: calls.append(1) or "x") == "x"
    assert cache.get("a", lambda: calls.append(1) or "y") == "x"
    assert calls == [1] and len(cache) == 1


def test_runner_registry_and_defaults():
    assert RUNNERS.names() == ["processes", "threads"]
    assert isinstance(RUNNERS.get("processes")(1).executor(), InlineExecutor)
    assert default_workers() >= 1
    assert InlineExecutor().submit(lambda: 1 / 0).exception().__class__ is ZeroDivisionError


def test_workers_default_to_the_cores(mimic_root, tmp_path):
    cfg = load_config(write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out"))
    assert cfg.workers is None and cfg.worker_count() == default_workers()
    assert cfg.runner == "processes"


def test_shard_writer_writes_a_row_group_per_flush_and_leaves_out_unfit_rows(tmp_path):
    schema = pa.schema([("id", pa.string()), ("n", pa.int32())])
    path = tmp_path / "data" / "t-00000-of-00001.parquet"
    writer = ShardWriter(path, schema)
    for i in range(3):
        writer.add({"id": str(i), "n": i})
    assert writer.flush() == []
    assert writer._pending == []  # the first row group already went to disk
    assert not path.exists()  # under a temporary name until closed
    writer.add({"id": "3", "n": 3})
    writer.add({"id": "bad", "n": "not a number"})
    writer.add({"id": "4", "n": 4})
    (failure,) = writer.flush()
    assert isinstance(failure, RowFailure) and failure.id == "bad" and "'bad'" in failure.message
    for i in range(5, 7):
        writer.add({"id": str(i), "n": i})
    assert writer.flush() == []
    written = writer.close()
    meta = pq.read_metadata(path)
    assert (written.rows, meta.num_rows, meta.num_row_groups) == (7, 7, 3)
    assert pq.read_table(path).column("id").to_pylist() == [str(i) for i in range(7)]
    assert list(path.parent.iterdir()) == [path]


def test_shard_writer_refuses_to_close_with_rows_never_flushed(tmp_path):
    writer = ShardWriter(tmp_path / "x.parquet", pa.schema([("id", pa.string())]))
    writer.add({"id": "a"})
    with pytest.raises(RuntimeError, match="never flushed"):
        writer.close()


def test_shard_writer_without_rows_writes_no_file(tmp_path):
    writer = ShardWriter(tmp_path / "x.parquet", pa.schema([("id", pa.string())]))
    assert writer.close() is None
    assert list(tmp_path.iterdir()) == []


def test_a_worker_process_that_dies_ends_the_build_in_one_clear_line(mimic_root, tmp_path):
    """A script without a main guard: each spawned worker runs it again and dies importing it."""
    import subprocess
    import sys
    from pathlib import Path

    config = write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out",
                          top={"workers": 2})
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
        "from advbench.config import load_config\n"
        "from advbench.errors import BuildError\n"
        "from advbench.pipeline import build_release\n"
        "try:\n"
        f"    build_release(load_config({str(config)!r}))\n"
        "except BuildError as exc:\n"
        "    print('BuildError:', exc)\n"
        "    raise SystemExit(3)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "BuildError: a worker process died" in done.stdout
    assert "__main__" in done.stdout
    assert not (tmp_path / "out" / "test-release" / "1.0.0").exists()


def _children(pid: int) -> set[int]:
    from pathlib import Path

    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    """Used by the build's runner and by the phantom writer (`advbench demo`, `phantoms`)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "pool.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1] / 'src')!r})\n"
        "from advbench.workers import process_pool\n"
        "if __name__ == '__main__':\n"
        "    with process_pool(2) as pool:\n"
        "        list(pool.map(time.sleep, [60, 60]))\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_children(parent.pid)) < 3:
            time.sleep(0.1)  # two workers and multiprocessing's resource tracker
        children = _children(parent.pid)
        assert len(children) >= 3, children
        time.sleep(0.5)  # the workers are sleeping in their tasks now
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.1)
        assert not [p for p in children if _alive(p)]
    finally:
        if parent.poll() is None:
            parent.kill()

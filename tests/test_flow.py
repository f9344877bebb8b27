"""The Prefect flow builds the same release as the plain pipeline, one task per shard."""

from __future__ import annotations

from advbench.config import load_config
from tests.conftest import write_config
from tests.test_build import check_release


def test_flow_builds_release_with_one_task_per_shard(prefect_harness, mimic_root, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.build import build_flow

    cfg = load_config(write_config(tmp_path / "build.yaml", mimic_root, tmp_path / "out"))
    seen = []
    state = build_flow(cfg, on_shard=seen.append, return_state=True)
    summary = state.result()
    flow_run_id = state.state_details.flow_run_id
    check_release(cfg.release_dir(), summary)
    assert len(seen) == 5

    import anyio

    async def shard_task_runs() -> list[str]:
        async with get_client() as client:
            runs = await client.read_task_runs()
        return sorted(r.name for r in runs
                      if r.flow_run_id == flow_run_id and r.name.startswith("shard "))

    names = anyio.run(shard_task_runs)
    assert names == ["shard test-0", "shard test-1", "shard train-0", "shard train-1",
                     "shard validation-0"]

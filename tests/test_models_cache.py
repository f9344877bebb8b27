"""The train-once cache shared by the demo classifiers and the demo CLIPs."""

from __future__ import annotations

import json

from advbench.models.cache import spec_hash, train_once


def _writer(folder, calls):
    def train():
        calls.append(1)
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"auroc": 0.9}))
    return train


def test_train_once_trains_at_first_use_then_reads_the_cached_metrics(tmp_path):
    folder = tmp_path / "m-abc"
    calls, log = [], []
    assert train_once(folder, _writer(folder, calls), what="m", log=log.append) == {"auroc": 0.9}
    assert train_once(folder, _writer(folder, calls), what="m") == {"auroc": 0.9}
    assert len(calls) == 1 and "training m" in log[0]


def test_a_killed_runs_temporary_folder_is_removed_before_training_again(tmp_path):
    folder = tmp_path / "m-abc"
    stale = tmp_path / "m-abc.4242.tmp"
    stale.mkdir()
    (stale / "weights.pt").write_bytes(b"half")
    other = tmp_path / "n-abc.4242.tmp"  # another model's: not ours to remove
    other.mkdir()
    train_once(folder, _writer(folder, []), what="m")
    assert not stale.exists() and other.exists()


def test_spec_hash_changes_with_any_field_and_not_with_key_order():
    a = spec_hash({"lr": 0.001, "epochs": 5})
    assert a == spec_hash({"epochs": 5, "lr": 0.001}) and len(a) == 12
    assert a != spec_hash({"lr": 0.001, "epochs": 6})

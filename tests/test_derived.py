"""Derived configs: the built-in ``identity`` goes through the same plan → shards → manifest
path as the attack families will, with and without Prefect, and its counts reconcile."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from advbench.attacks.identity import Identity
from advbench.config import ConfigError, load_config
from advbench.pipeline import build_release
from advbench.records import Outcome
from tests.conftest import write_config


def _config(tmp_path, mimic_root, **top):
    top = {"attacks": [{"kind": "identity"}], **top}
    return load_config(write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out", top=top))


def check_identity_release(release) -> dict:
    """Both configs reconcile; identity rows are the accepted studies' pixels, losslessly."""
    from datasets import load_dataset

    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["counts"] == {"inputs": 11, "accepted": 4, "rejected": 7, "failed": 0}
    ident = manifest["configs"]["identity"]
    assert ident["derived"] is True
    assert ident["counts"] == {"planned": 4, "accepted": 4, "rejected": 0, "failed": 0}
    assert ident["splits"] == manifest["configs"]["clean"]["splits"]
    assert {s["config"] for s in manifest["shards"]} == {"clean", "identity"}

    rows = 0
    for split in ident["splits"]:
        clean = {r["id"]: r for r in load_dataset(str(release), "clean", split=split)}
        derived = load_dataset(str(release), "identity", split=split)
        for row in derived:
            parent = clean[row["parent_id"]]
            assert row["id"] == f"{row['parent_id']}.identity.0"
            assert row["kind"] == "identity" and row["config"] == "identity"
            assert (row["modality"], row["body_part"]) == ("XR", "chest")
            assert row["mask"] is None
            assert row["report"] == parent["report"]
            assert row["image"].format == "PNG"
            np.testing.assert_array_equal(np.asarray(row["image"]),
                                          np.asarray(parent["image"].convert("L")))
            assert (row["width"], row["height"]) == parent["image"].size
            rows += 1
    assert rows == 4
    header = (release / "README.md").read_text().split("---")[1]
    assert "config_name: identity" in header
    return manifest


def test_identity_builds_in_process_and_reconciles(mimic_root, tmp_path):
    cfg = _config(tmp_path, mimic_root)
    summary = build_release(cfg)
    check_identity_release(cfg.release_dir())
    assert summary.configs["identity"].counts["planned"] == 4
    assert summary.configs["identity"].tables[0].rows == [["identity", "XR", 4]]


def test_identity_builds_through_prefect(prefect_harness, mimic_root, tmp_path):
    from flows.build import build_flow

    cfg = _config(tmp_path, mimic_root)
    summary = build_flow(cfg)
    check_identity_release(summary.path)


def test_identity_pixels_are_lossless_for_a_small_perturbation():
    """PNG keeps a ±1 grey-level change exactly (JPEG would not)."""
    from advbench.images import decode_pixels, encode_png

    rng = np.random.default_rng(0)
    base = rng.integers(0, 250, (32, 40), dtype=np.uint8)
    moved = base + (rng.random(base.shape) < 0.5).astype(np.uint8)
    assert np.array_equal(decode_pixels(encode_png(moved)), moved)
    wide = rng.integers(0, 65535, (8, 8), dtype=np.uint16)
    assert np.array_equal(decode_pixels(encode_png(wide)), wide)
    with pytest.raises(ValueError, match="losslessly"):
        encode_png(rng.random((4, 4)))


def _reasons(release, config: str) -> dict:
    manifest = json.loads((release / "manifest.json").read_text())
    got = manifest["configs"][config]
    c = got["counts"]
    assert c["planned"] == c["accepted"] + c["rejected"] + c["failed"]
    return got


def test_attack_errors_fail_their_cases_and_the_rest_is_written(mimic_root, tmp_path,
                                                                 monkeypatch):
    real_run = Identity.run

    def run(self, cases, cache):
        for item in real_run(self, cases, cache):
            if item.parent_id == "d0001-pa":
                item.fields["undeclared"] = 1  # does not fit the config's rows
            elif item.parent_id == "d0003-pa":
                case = next(c for c in cases if c.id == item.id)
                yield self.reject(case, "run", "target_not_reached", "checker said no")
                continue
            yield item

    monkeypatch.setattr(Identity, "run", run)
    cfg = _config(tmp_path, mimic_root, runner="threads")  # the patch lives in this process
    build_release(cfg)
    got = _reasons(cfg.release_dir(), "identity")
    assert got["counts"] == {"planned": 4, "accepted": 2, "rejected": 1, "failed": 1}
    rejections = [json.loads(x) for x in (cfg.release_dir() / "rejections.jsonl").open()]
    mine = {r["id"]: r for r in rejections if r["config"] == "identity"}
    assert mine["d0001-pa.identity.0"]["stage"] == "write"
    assert "undeclared" in mine["d0001-pa.identity.0"]["message"]
    assert mine["d0003-pa.identity.0"]["reason"] == "target_not_reached"
    assert all(r["config"] in ("clean", "identity") for r in rejections)


def test_an_attack_that_raises_fails_the_cases_not_yet_made(mimic_root, tmp_path, monkeypatch):
    def run(self, cases, cache):
        raise RuntimeError("GPU fell over")
        yield  # pragma: no cover

    monkeypatch.setattr(Identity, "run", run)
    cfg = _config(tmp_path, mimic_root, runner="threads")
    summary = build_release(cfg)
    got = _reasons(cfg.release_dir(), "identity")
    assert got["counts"] == {"planned": 4, "accepted": 0, "rejected": 0, "failed": 4}
    assert got["reasons"] == [{"status": "failed", "stage": "run", "reason": "RuntimeError",
                               "count": 4}]
    assert got["splits"] == {} and summary.counts["accepted"] == 4  # clean is untouched
    header = (cfg.release_dir() / "README.md").read_text().split("---")[1]
    assert "config_name: identity" not in header  # no rows: not loadable, not declared


def test_an_attack_whose_plan_raises_fails_one_case_per_study(mimic_root, tmp_path,
                                                              monkeypatch):
    def plan(self, studies):
        raise ValueError("no concepts to perturb")

    monkeypatch.setattr(Identity, "plan", plan)
    cfg = _config(tmp_path, mimic_root, runner="threads")
    build_release(cfg)
    got = _reasons(cfg.release_dir(), "identity")
    assert got["counts"] == {"planned": 4, "accepted": 0, "rejected": 0, "failed": 4}
    assert got["reasons"][0]["stage"] == "plan"


def test_a_row_that_does_not_convert_fails_its_input_and_the_shard_keeps_the_rest(
        mimic_root, tmp_path, monkeypatch):
    from advbench.release import clean

    real_row = clean.row

    def row(study, result):
        out = real_row(study, result)
        if study.id == "d0002-pa":
            out["width"] = "wide"  # not an int32
        return out

    monkeypatch.setattr(clean, "row", row)
    cfg = load_config(write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out",
                                   top={"runner": "threads", "shard_size": 100}))
    summary = build_release(cfg)
    assert summary.counts == {"inputs": 11, "accepted": 3, "rejected": 7, "failed": 1}
    failed = [json.loads(x) for x in (cfg.release_dir() / "rejections.jsonl").open()
              if '"failed"' in x]
    assert [(f["id"], f["stage"], f["reason"]) for f in failed] == [
        ("d0002-pa", "write", "row_does_not_fit_schema")]
    assert "d0002-pa" in failed[0]["message"]
    # d0001-pa shares the train shard with the failed row and is still there
    from datasets import load_dataset

    ids = {r["id"] for r in load_dataset(str(cfg.release_dir()), "clean", split="train")}
    assert ids == {"d0001-pa"}


def _error(tmp_path, mimic_root, attacks) -> str:
    path = write_config(tmp_path / "bad.yaml", mimic_root, tmp_path / "out",
                        top={"attacks": attacks})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_unknown_attack_kind_names_file_key_and_known_kinds(mimic_root, tmp_path):
    msg = _error(tmp_path, mimic_root, [{"kind": "corpa-typo"}])
    assert "bad.yaml: attacks[0]" in msg and "unknown attack kind" in msg and "identity" in msg


def test_unknown_attack_key_names_file_and_key(mimic_root, tmp_path):
    msg = _error(tmp_path, mimic_root, [{"kind": "identity", "strength": 3}])
    assert msg == f"{tmp_path / 'bad.yaml'}: attacks[0].strength: unknown key (got 3)"


def test_attack_config_names_must_be_unique(mimic_root, tmp_path):
    msg = _error(tmp_path, mimic_root, [{"kind": "identity"}, {"kind": "identity"}])
    assert "attacks[1]: release config 'identity' is already taken" in msg
    msg = _error(tmp_path, mimic_root, [{"kind": "identity", "name": "clean"}])
    assert "attacks[0]: release config 'clean' is already taken" in msg


def test_a_renamed_attack_entry_writes_its_own_config(mimic_root, tmp_path):
    cfg = _config(tmp_path, mimic_root, attacks=[{"kind": "identity"},
                                                 {"kind": "identity", "name": "again"}])
    build_release(cfg)
    manifest = json.loads((cfg.release_dir() / "manifest.json").read_text())
    assert list(manifest["configs"]) == ["clean", "identity", "again"]
    assert manifest["configs"]["again"]["counts"]["accepted"] == 4
    assert (cfg.release_dir() / "data" / "again").is_dir()


def test_outcomes_of_derived_cases_carry_their_config():
    o = Outcome("x.identity.0", "failed", "run", "E", "m", 0, "identity")
    assert o.to_dict()["config"] == "identity"


def test_sample_pixels_png_in_rows_keep_their_size(tmp_path):
    from advbench.images import encode_png
    from advbench.records import Sample
    from advbench.release.derived import DerivedConfig

    class Plain(DerivedConfig):
        default_name = "plain"

    pixels = np.zeros((5, 7), dtype=np.uint8)
    row = Plain().row(Sample("s", "p", "plain", "k", "test", "XR", "chest", pixels,
                             mask=pixels > 0))
    assert (row["width"], row["height"]) == (7, 5)
    assert Image.open(io.BytesIO(row["mask"]["bytes"])).size == (7, 5)
    assert row["image"]["bytes"] == encode_png(pixels)


def test_a_derived_row_that_does_not_fit_fails_its_case_only(mimic_root, tmp_path, monkeypatch):
    from advbench.attacks.identity import IdentityRelease

    real_row = IdentityRelease.row

    def row(self, sample):
        out = real_row(self, sample)
        if sample.parent_id == "d0003-pa":
            out["height"] = "tall"  # not an int32: found when the batch is written
        return out

    monkeypatch.setattr(IdentityRelease, "row", row)
    cfg = _config(tmp_path, mimic_root, runner="threads")
    build_release(cfg)
    got = _reasons(cfg.release_dir(), "identity")
    assert got["counts"] == {"planned": 4, "accepted": 3, "rejected": 0, "failed": 1}
    assert got["reasons"] == [{"status": "failed", "stage": "write",
                               "reason": "row_does_not_fit_schema", "count": 1}]

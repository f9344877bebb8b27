"""The ``medfocusleak`` config in a build: an image-folder source (gray and colour, with and
without masks), tiny random open_clip surrogates, victims and AvgSim encoder, a few steps.
Checks on the decoded PNGs that every MedFocusLeak row keeps the L∞ bound against the exact
pixels it started from and leaves the diagnostic mask bit-identical; that the M-Attack
baseline rows exist with the same ε and steps; that counts reconcile and the summary tables
are there."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from advbench.config import ConfigError, load_config  # noqa: E402
from advbench.pipeline import build_release  # noqa: E402
from tests.conftest import TINY_RN, TINY_VIT, write_tiny_open_clip  # noqa: E402

# id: (findings, modality, colour?, has mask?)
STUDIES = {
    "us1": ("A 12 mm hypoechoic lesion in the left lobe.", "US", False, True),
    "mr1": ("A 2 cm enhancing mass in the right frontal lobe.", "MR", False, True),
    "dm1": ("Pigmented lesion with irregular borders on the left forearm.", "DMS", True, True),
    "us2": ("Unremarkable.", "US", False, True),  # no rule applies: no target
    "us3": ("A 9 mm hyperechoic lesion in the right lobe.", "US", False, False),  # no mask
}
SIZE = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory, torch_one_thread):
    tmp = tmp_path_factory.mktemp("mfl")
    models = tmp / "models"
    models.mkdir()
    vit = write_tiny_open_clip(models, "mflb-vit", TINY_VIT, seed=0)
    rn = write_tiny_open_clip(models, "mflb-rn", TINY_RN, seed=0)
    other = write_tiny_open_clip(models, "mflb-vit", TINY_VIT, seed=1)  # victim / AvgSim
    root = tmp / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows, gallery = [], []
    for sid, (findings, modality, colour, has_mask) in STUDIES.items():
        y, x = np.mgrid[:SIZE, :SIZE]
        base = (96 + 60 * np.sin(x / 7.0) * np.cos(y / 9.0)
                + rng.normal(0, 12, (SIZE, SIZE))).clip(0, 255)
        pixels = np.dstack([base, base[::-1], base.T]) if colour else base
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"{sid}.png")
        row = {"id": sid, "path": f"{sid}.png", "findings": findings, "modality": modality,
               "body_part": "abdomen", "split": "test", "mask": ""}
        if has_mask:
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[20:36, 14:34] = 255  # the lesion
            Image.fromarray(mask).save(root / f"{sid}-mask.png")
            row["mask"] = f"{sid}-mask.png"
        rows.append(row)
        gallery.append({"image": str(root / f"{sid}.png"), "findings": findings})
    with (root / "metadata.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp / "gallery.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gallery))

    def clip(files, **kw):
        cfg, weights = files
        return {"model": cfg.stem, "pretrained": str(weights),
                "model_config_file": str(cfg), "device": "cpu", **kw}

    block = {
        "kind": "medfocusleak", "targets_per_sample": 1,
        "surrogates": [clip(vit), clip(rn)],
        "attack": {"steps": 3, "epsilon": 8 / 255, "squares": 4, "min_square": 8},
        "mask_from": ["source", "ground_truth"],
        "victims": [{"kind": "open-clip", "name": "zero-shot", **clip(other)},
                    {"kind": "retrieval", "name": "nearest", "gallery": str(tmp / "gallery.jsonl"),
                     **clip(other)}],
        "similarity_model": clip(other),
        "batch_size": 4, "device": "cpu",
    }
    return {"tmp": tmp, "root": root, "block": block, "vit": vit}


def _config(tmp, root, *blocks, name="b.yaml"):
    data = {"name": "mfl-test", "version": "1.0.0", "seed": 0, "output": str(tmp / "out"),
            "shard_size": 8, "workers": 1, "runner": "threads",
            "sources": [{"kind": "image-folder", "root": str(root)}], "attacks": list(blocks)}
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


@pytest.fixture(scope="module")
def built(setup):
    saliency = dict(setup["block"], name="mfl_saliency", mask_from=["saliency"],
                    baseline=False, modalities=["US"], victims=[])
    cfg = _config(setup["tmp"], setup["root"], setup["block"], saliency)
    summary = build_release(cfg)
    release = cfg.release_dir()
    manifest = json.loads((release / "manifest.json").read_text())
    from datasets import load_dataset

    rows: dict[str, list] = {"medfocusleak": [], "mfl_saliency": []}
    for config, found in rows.items():
        for split in manifest["configs"][config]["splits"]:
            found += list(load_dataset(str(release), config, split=split))
    return {"summary": summary, "manifest": manifest, "rows": rows["medfocusleak"],
            "saliency": rows["mfl_saliency"], "release": release}


def test_counts_reconcile_and_bad_studies_are_rejected_with_a_reason(built):
    entry = built["manifest"]["configs"]["medfocusleak"]
    c = entry["counts"]
    assert c["planned"] == c["accepted"] + c["rejected"] + c["failed"]
    assert c["failed"] == 0, entry["reasons"]
    reasons = {r["reason"]: r["count"] for r in entry["reasons"]}
    assert reasons == {"no_target": 1, "no_mask": 2}  # us2 once; us3 for both methods
    assert c["accepted"] == len(built["rows"]) == 6  # 3 studies × 1 target × 2 methods
    assert {r["parent_id"] for r in built["rows"]} == {"us1", "mr1", "dm1"}


def test_medfocusleak_rows_keep_the_bound_and_the_mask_on_the_decoded_pngs(built):
    rows = [r for r in built["rows"] if r["method"] == "medfocusleak"]
    assert len(rows) == 3
    for r in rows:
        eps = round(r["epsilon"] * 255)
        adv = np.asarray(r["image"]).astype(int)
        orig = np.asarray(r["original_image"]).astype(int)
        mask = np.asarray(r["mask"]) == 255
        assert adv.shape == orig.shape and adv.shape[:2] == mask.shape
        assert (adv.ndim == 3) == (r["parent_id"] == "dm1")  # colour stays colour
        assert np.abs(adv - orig).max() <= eps
        assert (adv != orig).any()
        assert (adv[mask] == orig[mask]).all()
        assert mask.any() and r["mask_change"] == 0 and r["linf"] <= eps
        assert r["kind"] == "medfocusleak" and r["steps"] == 3 and r["mask_source"] == "source"
        assert r["surrogates"] == ["mflb-vit", "mflb-rn"]
        assert r["target_findings"] != r["true_findings"] and r["edits"]
        assert -1 <= r["avg_sim"] <= 1
        assert [v["name"] for v in r["victims"]] == ["zero-shot", "nearest"]
        for v in r["victims"]:
            assert v["answer"] and v["clean_answer"] and v["error"] is None
            assert isinstance(v["clean_misdirected"], bool)  # the clean answer judged too


def test_clean_rows_of_other_modalities_carry_no_chest_concepts(built):
    """An ultrasound's "lesion" or a dermoscopy "mass" is not a chest radiograph finding: the
    clean config leaves the 17 concepts and six labels null for such studies."""
    from datasets import load_dataset

    manifest = built["manifest"]
    rows = [r for split in manifest["configs"]["clean"]["splits"]
            for r in load_dataset(str(built["release"]), "clean", split=split)]
    assert {r["modality"] for r in rows} >= {"US", "MR", "DMS"}
    for r in rows:
        assert r["concept_mass"] is None and r["label_cancer"] is None, r["id"]
        assert r["positive_classes"] == [] and r["mentions"] == []


def test_m_attack_rows_share_eps_and_steps_and_may_touch_the_mask(built):
    mfl = {r["parent_id"]: r for r in built["rows"] if r["method"] == "medfocusleak"}
    base = {r["parent_id"]: r for r in built["rows"] if r["method"] == "m_attack"}
    assert set(base) == set(mfl)
    for pid, r in base.items():
        assert r["epsilon"] == mfl[pid]["epsilon"] and r["steps"] == mfl[pid]["steps"]
        assert r["target_findings"] == mfl[pid]["target_findings"]
        adv = np.asarray(r["image"]).astype(int)
        orig = np.asarray(r["original_image"]).astype(int)
        assert np.abs(adv - orig).max() <= round(r["epsilon"] * 255)
    assert any(r["mask_change"] > 0 for r in base.values())


def test_saliency_masks_come_from_the_vit_surrogate_and_are_kept(built):
    rows = built["saliency"]
    assert {r["parent_id"] for r in rows} == {"us1", "us3"}  # us3 has no source mask
    for r in rows:
        assert r["mask_source"] == "saliency" and r["method"] == "medfocusleak"
        mask = np.asarray(r["mask"]) == 255
        adv, orig = np.asarray(r["image"]), np.asarray(r["original_image"])
        assert mask.any() and not mask.all()
        assert (adv[mask] == orig[mask]).all() and r["mask_change"] == 0
        assert r["victims"] == []


def test_summary_tables(built):
    tables = {t.title: t for t in built["summary"].configs["medfocusleak"].tables}
    victims = tables["misdirection per victim, modality and method"]
    assert victims.columns[:4] == ["victim", "modality", "method", "n"]
    assert "clean MTR" in victims.columns
    assert any("MAS" in c and "geometric" in c for c in victims.columns)
    assert {(r[0], r[2]) for r in victims.rows} == {
        (v, m) for v in ("zero-shot", "nearest") for m in ("medfocusleak", "m_attack")}
    overall = {(r[0], r[2]): r for r in victims.rows if r[1] == "all"}
    assert set(overall) == {(r[0], r[2]) for r in victims.rows}
    for (victim, method), r in overall.items():  # "all" counts every row of its method once
        parts = [p for p in victims.rows if p[0] == victim and p[2] == method and p[1] != "all"]
        assert r[3] == sum(p[3] for p in parts) == 3
    check = {r[0]: r for r in tables["bound and mask, re-measured on the released PNGs"].rows}
    # method, rows, max L∞, rows over ε, max mask change, rows with the mask changed
    assert check["medfocusleak"][1] == 3 and 0 < check["medfocusleak"][2] <= 8  # 3 steps of 1/255
    assert check["medfocusleak"][3:] == [0, 0, 0]
    assert check["m_attack"][4] > 0 and check["m_attack"][5] > 0  # the baseline touches it
    fid = {r[0]: r for r in tables["fidelity per method (vs the original pixels)"].rows}
    assert fid["medfocusleak"][-1] == 0
    card = (built["release"] / "README.md").read_text()
    assert "misdirection per victim" in card


def test_similarity_model_must_not_be_a_surrogate(setup, tmp_path):
    block = dict(setup["block"], similarity_model=setup["block"]["surrogates"][0])
    with pytest.raises(ConfigError, match="similarity_model"):
        _config(tmp_path, setup["root"], block)
    block = dict(setup["block"], attack={"masked": False})
    with pytest.raises(ConfigError, match="baseline"):
        _config(tmp_path, setup["root"], block)


def test_a_case_that_raises_fails_alone_naming_itself(setup, tmp_path, monkeypatch):
    from advbench.attacks.medfocusleak import attack as mfl

    real = mfl.run_attack_groups

    def flaky(items, *args, **kwargs):
        if any(np.asarray(image).ndim == 3 for image, _, _ in items):
            raise RuntimeError("colour breaks this attack")
        return real(items, *args, **kwargs)

    monkeypatch.setattr(mfl, "run_attack_groups", flaky)
    block = dict(setup["block"], victims=[], similarity_model=None)
    cfg = _config(tmp_path, setup["root"], block)
    build_release(cfg)
    manifest = json.loads((cfg.release_dir() / "manifest.json").read_text())
    c = manifest["configs"]["medfocusleak"]["counts"]
    assert c["planned"] == c["accepted"] + c["rejected"] + c["failed"]
    assert c["failed"] == 2 and c["accepted"] == 4  # dm1 for both methods; the rest made
    failed = [json.loads(line) for line in
              (cfg.release_dir() / "rejections.jsonl").read_text().splitlines()]
    failed = [f for f in failed if f.get("status") == "failed"]
    assert {f["id"] for f in failed} == {"dm1.medfocusleak.medfocusleak.0",
                                         "dm1.medfocusleak.m_attack.0"}
    assert all(f["id"] in f["message"] and "colour" in f["message"] for f in failed)


def test_fraction_picks_the_same_studies_in_any_batch_and_only_for_named_modalities():
    """``fraction`` samples studies by a hash of their id: the same choice whatever the
    batch or order, about the asked share, and modalities it does not name are all kept."""
    from advbench.attacks.medfocusleak.attack import MedFocusLeak
    from advbench.attacks.medfocusleak.config import MedFocusLeakConfig
    from advbench.concepts.extract import extract
    from advbench.records import Study
    from advbench.release.clean import AcceptedStudy

    def study(sid: str, modality: str) -> AcceptedStudy:
        report = "A 12 mm hypoechoic lesion in the left lobe."
        s = Study(id=sid, source="t", split="test", subject_id="1", study_id="1", image_id=sid,
                  view_position="", image_bytes=b"", image_path="", width=1, height=1,
                  report=report, report_path="", modality=modality, body_part="abdomen")
        return AcceptedStudy(s, extract(report))

    block = {"surrogates": [{"model": "ViT-B-16", "pretrained": "/nowhere.pt"}],
             "fraction": {"us": 0.25}, "baseline": False}
    attack = MedFocusLeak(MedFocusLeakConfig(**block), seed=0)
    studies = [study(f"u{i}", "US") for i in range(400)] + [study(f"m{i}", "MR")
                                                             for i in range(20)]
    chosen = {c.parent_id for c in attack.plan(studies)}
    us = {s for s in chosen if s.startswith("u")}
    assert 70 <= len(us) <= 130  # about a quarter of 400
    assert {f"m{i}" for i in range(20)} <= chosen  # MR is not named: all kept
    again = set()
    for part in (studies[::-1][:200], studies[::-1][200:]):  # other batches, other order
        again |= {c.parent_id for c in attack.plan(part)}
    assert again == chosen
    with pytest.raises(ValueError, match="share"):
        MedFocusLeakConfig(**{**block, "fraction": 0.0})


def test_the_decoded_check_counts_rows_over_epsilon_and_with_the_mask_changed():
    import duckdb
    import pyarrow as pa

    from advbench.attacks.medfocusleak.release import decoded_check
    from advbench.images import encode_png

    orig = np.full((8, 8), 100, np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 255
    ok = orig.copy()
    ok[6, 6] += 4                      # background, within 4/255
    over = orig.copy()
    over[6, 6] += 9                    # background, over ε
    touched = orig.copy()
    touched[1, 1] += 2                 # inside the mask

    def row(method, img):
        return {"method": method, "epsilon": 4 / 255, "image": {"bytes": encode_png(img)},
                "original_image": {"bytes": encode_png(orig)}, "mask": {"bytes": encode_png(mask)}}

    table = pa.Table.from_pylist([row("medfocusleak", ok), row("medfocusleak", over),
                                  row("medfocusleak", touched), row("m_attack", touched)])
    con = duckdb.connect()
    con.register("t", table)
    got = {r[0]: r for r in decoded_check(con, "t")}
    assert got["medfocusleak"] == ["medfocusleak", 3, 9, 1, 2, 1]
    assert got["m_attack"] == ["m_attack", 1, 2, 0, 2, 1]


class _WordSurrogate:
    """A stand-in with a tokenizer that reads the first ``n`` words (CLIP reads 77 tokens)."""

    def __init__(self, n: int):
        self.n = n

    def reads_alike(self, a: str, b: str) -> bool:
        return a.split()[: self.n] == b.split()[: self.n]


def test_aim_texts_fall_back_to_the_edited_sentence_when_the_edit_is_past_the_context():
    from advbench.attacks.medfocusleak.texts import aim_texts

    truth = "Heart size is normal. The mediastinum is unremarkable. Small left pleural effusion."
    target = truth.replace("left", "right")
    assert aim_texts(truth, target, [_WordSurrogate(50)]) == (target, truth)  # sees it
    # past 8 words: the surrogates read the edited sentence on
    assert aim_texts(truth, target, [_WordSurrogate(8)]) == (
        "Small right pleural effusion.", "Small left pleural effusion.")
    # one surrogate that sees it is enough
    assert aim_texts(truth, target, [_WordSurrogate(2), _WordSurrogate(50)])[0] == target
    # an edit past the context even within its own sentence: nothing to aim at
    assert aim_texts(truth, target, [_WordSurrogate(1)]) is None


def test_chest_radiograph_findings_are_the_findings_and_impression_only():
    from advbench.attacks.medfocusleak.texts import findings_of
    from advbench.records import Study

    report = ("EXAMINATION: CHEST (PA AND LAT)\n\nINDICATION: cough\n\nFINDINGS: Small left "
              "pleural effusion.\n\nIMPRESSION: Left effusion.")

    def study(modality: str) -> Study:
        return Study(id="s", source="t", split="test", subject_id="1", study_id="1",
                     image_id="s", view_position="PA", image_bytes=b"", image_path="",
                     width=1, height=1, report=report, report_path="", modality=modality,
                     body_part="chest")

    assert findings_of(study("XR")) == "Small left pleural effusion. Left effusion."
    assert findings_of(study("CT")) == report  # other modalities: the findings as given

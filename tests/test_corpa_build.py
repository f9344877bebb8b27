"""The ``corpa`` config in a build: phantom studies in, verified adversarial rows out, every
planned case counted, and each row's report, image and scene saying its target."""

from __future__ import annotations

import json

import numpy as np
import pytest

from advbench.attacks.corpa.generators import wanted_findings
from advbench.concepts.extract import extract
from advbench.config import ConfigError, load_config
from advbench.demo import write_phantoms
from advbench.pipeline import build_release
from tests.conftest import write_config

ALL_SPLITS = ["train", "validate", "test"]


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpa") / "phantoms"
    write_phantoms(root, 16, seed=5, size=128)
    return root


def _build(tmp_path, root, **corpa):
    tmp_path.mkdir(parents=True, exist_ok=True)
    top = {"attacks": [{"kind": "corpa", "splits": ALL_SPLITS, **corpa}], "shard_size": 8,
           "workers": 1}
    cfg = load_config(write_config(tmp_path / "b.yaml", root, tmp_path / "out", top=top,
                                   views=["PA"]))
    return build_release(cfg), cfg.release_dir()


def _rows(release, config="corpa"):
    from datasets import load_dataset

    manifest = json.loads((release / "manifest.json").read_text())
    rows = []
    for split in manifest["configs"][config]["splits"]:
        rows += list(load_dataset(str(release), config, split=split))
    return manifest, rows


def test_phantom_rows_say_their_target_in_report_image_and_scene(phantom_root, tmp_path):
    summary, release = _build(tmp_path, phantom_root, generator={"kind": "phantom",
                                                                 "candidates": 2})
    manifest, rows = _rows(release)
    counts = manifest["configs"]["corpa"]["counts"]
    assert counts["planned"] == counts["accepted"] + counts["rejected"] + counts["failed"]
    reasons = {r["reason"]: r["count"] for r in manifest["configs"]["corpa"]["reasons"]}
    assert set(reasons) <= {"not_applicable", "report_not_verified"}
    applicable = counts["planned"] - reasons.get("not_applicable", 0)
    assert counts["accepted"] >= 0.95 * applicable and len(rows) == counts["accepted"] > 0
    assert {r["kind"] for r in rows} == {"inner_class", "over_diagnosis", "under_diagnosis",
                                         "normal_to_disease", "disease_to_normal"}
    _, clean = _rows(release, "clean")
    parents = {r["id"]: r for r in clean}
    for row in rows:
        parent = parents[row["parent_id"]]
        assert row["original_report"] == parent["report"]
        assert extract(row["report"]).concepts == row["target_concepts"]
        assert row["achieved_concepts"] == row["target_concepts"]
        original = np.asarray(row["original_image"])
        np.testing.assert_array_equal(original, np.asarray(parent["image"].convert("L")))
        image = np.asarray(row["image"])
        if row["edit_mask"] is None:
            np.testing.assert_array_equal(image, original)
        else:
            outside = np.asarray(row["edit_mask"]) == 0
            np.testing.assert_array_equal(image[outside], original[outside])
            assert (image != original).any()
        assert row["ssim_outside_edit"] == pytest.approx(1.0, abs=1e-6)
        scene = json.loads(row["scene"])
        assert {f["kind"] for f in scene["findings"]} == wanted_findings(row["target_concepts"])
        assert scene["anatomy"] == json.loads(parent["scene"])["anatomy"]
        assert row["generator"] == "phantom" and row["victims"] == []


def test_reports_only_rows_keep_the_image(phantom_root, tmp_path):
    _, release = _build(tmp_path, phantom_root, generator={"kind": "none"},
                        kinds={"over_diagnosis": 1, "disease_to_normal": 1})
    _, rows = _rows(release)
    assert rows and {r["kind"] for r in rows} <= {"over_diagnosis", "disease_to_normal"}
    for row in rows:
        np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(row["original_image"]))
        assert row["edit_mask"] is None and row["scene"] is None
        assert extract(row["report"]).concepts == row["target_concepts"]


def test_the_same_build_gives_the_same_rows(phantom_root, tmp_path):
    _, first = _build(tmp_path / "a", phantom_root)
    _, second = _build(tmp_path / "b", phantom_root)
    a = {r["id"]: (r["report"], np.asarray(r["image"]).tobytes()) for r in _rows(first)[1]}
    b = {r["id"]: (r["report"], np.asarray(r["image"]).tobytes()) for r in _rows(second)[1]}
    assert a == b


def test_bad_corpa_config_names_the_key(tmp_path, phantom_root):
    for corpa, key in (({"kinds": {"outer_class": 1}}, "kinds"),
                       ({"generator": {"kind": "dall-e"}}, "generator"),
                       ({"removal": "gone"}, "removal")):
        path = write_config(tmp_path / "b.yaml", phantom_root, tmp_path / "out",
                            top={"attacks": [{"kind": "corpa", **corpa}]})
        with pytest.raises(ConfigError, match=key):
            load_config(path)


def test_victims_are_queried_as_black_boxes_and_summarised(phantom_root, tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    torch.jit.save(torch.jit.script(net), tmp_path / "victim.ts")
    victim = {"kind": "torchscript", "name": "tiny", "file": str(tmp_path / "victim.ts"),
              "labels": ["Cardiomegaly", "Effusion", "Pneumothorax"], "input_size": 32,
              "device": "cpu"}
    summary, release = _build(tmp_path, phantom_root, victims=[victim], queries=2,
                              generator={"kind": "phantom", "candidates": 2},
                              pgd={"epsilons": [4 / 255, 8 / 255], "steps": 3})
    _, rows = _rows(release)
    assert rows
    from advbench.models.victims import VICTIMS, load_victim

    tiny = load_victim(VICTIMS.get("torchscript").Config(**victim))
    for row in rows:
        (v,) = row["victims"]
        assert v["name"] == "tiny" and 1 <= v["queries"] <= 2
        assert set(v["clean_labels"]) | set(v["adversarial_labels"]) <= {
            "healthy", "cardiomegaly", "pleural_effusion", "pneumothorax"}
        fooled = sorted(v["adversarial_labels"]) != sorted(row["target_labels"])
        assert v["success"] == fooled
        if not v["success"]:  # the budget was spent: every candidate was tried (one only
            # when the generator added nothing: all its candidates would be the same image)
            settings = json.loads(row["generator_settings"])
            assert v["queries"] == (2 if settings["added"] else 1)
        # the clean answer is the victim's own answer on the original image
        assert tiny.predict([np.asarray(row["original_image"])])[0] == v["clean_labels"]
        assert [round(e["epsilon"] * 255) for e in v["pgd"]] == [4, 8]
        assert all(set(e["labels"]) <= {"healthy", "cardiomegaly", "pleural_effusion",
                                        "pneumothorax"} for e in v["pgd"])
    titles = [t.title for t in summary.configs["corpa"].tables]
    assert "victims (black box)" in titles
    table = next(t for t in summary.configs["corpa"].tables if t.title == "victims (black box)")
    assert table.rows[0][0] == "tiny" and table.rows[0][4] == len(rows)
    # clean accuracy counts each study once, however many CoRPA rows it has
    clean = {row["parent_id"]: sorted(row["victims"][0]["clean_labels"])
             == sorted(row["source_labels"]) for row in rows}
    assert table.rows[0][1] == len(clean)
    assert table.rows[0][2] == round(sum(clean.values()) / len(clean), 3)
    pgd = next(t for t in summary.configs["corpa"].tables if "PGD" in t.title)
    assert [r[1] for r in pgd.rows] == [4.0, 8.0]
    assert all(r[2] <= r[3] <= 1.0 for r in pgd.rows)  # exact match ≤ per-label accuracy
    assert all(r[4] == table.rows[0][1] for r in pgd.rows)  # the same clean studies


def test_pgd_raises_the_multilabel_loss_within_its_budget():
    """ART's PGD, through the victim wrapper, moves the image within ε and raises the loss
    of the true labels (a victim with a known gradient: the mean pixel drives 'effusion')."""
    import torch

    from advbench.attacks.corpa.pgd import PgdConfig
    from advbench.models.victims import VICTIMS, Victim, to_batch

    class Mean(torch.nn.Module):
        def forward(self, x):
            return (x.mean(dim=(1, 2, 3)) * 20 - 10)[:, None]

    class MeanVictim(Victim):
        kind = "mean-test"
        Config = VICTIMS.get("torchscript").Config

        def load(self):
            return Mean()

        def labels_of_model(self):
            return ["Effusion"]

        def preprocess(self, batch):
            return batch

    v = MeanVictim(MeanVictim.Config(kind="torchscript", file="unused.ts", labels=["Effusion"]))
    image = np.full((16, 16), 140, np.uint8)  # mean 0.55 → effusion score sigmoid(1) = 0.73
    assert v.predict([image])[0] == ["pleural_effusion"]
    from advbench.attacks.corpa.pgd import pgd_answers

    (small, large) = pgd_answers(v, image, ["pleural_effusion"],
                                 PgdConfig(epsilons=[1 / 255, 16 / 255], steps=5))
    assert small["labels"] == ["pleural_effusion"]  # 1/255 cannot bring 0.55 under 0.5
    assert large["labels"] == ["healthy"]  # 16/255 can: the attack lowered the true label
    before = v.class_scores(to_batch([image]))[0, 2].item()
    assert before > 0.5


def test_the_image_check_keeps_only_candidates_that_show_the_target(phantom_root, tmp_path):
    """A checker that sees no disease in any image passes only the edited cases that add no
    class (a removal is seen: the removed class is not found); every case that adds one is
    rejected with the check's reason, and a case the generator left unedited is not
    checked."""
    import torch

    class NoDisease(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), -10.0)

    torch.jit.save(torch.jit.script(NoDisease()), tmp_path / "checker.ts")
    checker = {"kind": "torchscript", "name": "checker", "file": str(tmp_path / "checker.ts"),
               "labels": ["Cardiomegaly", "Effusion"], "input_size": 16, "device": "cpu"}
    summary, release = _build(tmp_path, phantom_root,
                              image_check={"kind": "classifier", "model": checker},
                              generator={"kind": "phantom", "candidates": 2})
    manifest, rows = _rows(release)
    checked = [r for r in rows if r["image_check"] is not None]
    assert checked and "disease_to_normal" in {r["kind"] for r in checked}
    for row in checked:
        check = row["image_check"]
        assert check["model"] == "checker" and check["passed"] is True
        assert row["kind"] in {"disease_to_normal", "under_diagnosis"}  # nothing added
        if row["kind"] == "disease_to_normal":
            assert check["target_score"] == pytest.approx(1.0, abs=1e-3)  # healthy
        assert row["edit_mask"] is not None
    for row in rows:
        if row["image_check"] is None:  # nothing edited: the original's pixels, unchecked
            assert row["edit_mask"] is None
            assert np.array_equal(np.asarray(row["image"]), np.asarray(row["original_image"]))
    reasons = {r["reason"] for r in manifest["configs"]["corpa"]["reasons"]}
    assert "image_check_failed" in reasons


def test_the_checker_must_not_be_a_victim(phantom_root, tmp_path):
    spec = {"kind": "torchscript", "file": "m.ts", "labels": ["Effusion"]}
    path = write_config(tmp_path / "b.yaml", phantom_root, tmp_path / "out", top={"attacks": [
        {"kind": "corpa", "victims": [spec], "image_check": {"kind": "classifier",
                                                             "model": spec}}]})
    with pytest.raises(ConfigError, match="must not be one of the victims"):
        load_config(path)


def test_corpa_plans_chest_radiographs_only():
    """CoRPA perturbs chest radiograph concepts: an ultrasound whose text says "mass" is not
    planned, the same text on a chest radiograph is."""
    from advbench.attacks.corpa.attack import Corpa, CorpaConfig
    from advbench.records import Study
    from advbench.release.clean import AcceptedStudy

    report = "FINDINGS: A 3 cm mass in the right upper lobe.\nIMPRESSION: Right upper lobe mass."

    def study(sid: str, modality: str, body_part: str) -> AcceptedStudy:
        s = Study(id=sid, source="t", split="test", subject_id="1", study_id="1", image_id=sid,
                  view_position="PA", image_bytes=b"", image_path="", width=1, height=1,
                  report=report, report_path="", modality=modality, body_part=body_part)
        return AcceptedStudy(s, extract(report))

    attack = Corpa(CorpaConfig(generator={"kind": "none"}), seed=0)
    cases = attack.plan([study("cxr", "XR", "chest"), study("us", "US", "breast")])
    assert cases and {c.parent_id for c in cases} == {"cxr"}

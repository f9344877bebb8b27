"""MedFocusLeak target findings: rule edits per modality, selection, XR concept check, LLM."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from advbench.attacks.medfocusleak.target_rules import (
    TargetRulesError,
    canonical_modality,
    load_rules,
    rules_for,
)
from advbench.attacks.medfocusleak.targets import (
    Edit,
    LlmRewriter,
    TargetFindings,
    make_targets,
    rule_targets,
)
from advbench.concepts.extract import default_extractor
from advbench.models.endpoint import ChatClient, EndpointConfig
from advbench.sources.metadata import imaging_data

CXR = ("There is a focal consolidation in the right lower lobe.  No pleural effusion or\n"
       " pneumothorax.  Heart size is normal.")
THYROID = "A 2.1 cm hypoechoic lesion in the left lobe of the thyroid"
MAMMO = "Irregular spiculated mass in the upper outer quadrant of the right breast, BI-RADS 5"
DERM = "Asymmetric pigmented lesion with irregular borders on the left forearm"
FUNDUS = "Mild non-proliferative diabetic retinopathy with microaneurysms near the macula"
MR_BRAIN = ("Multiple T2/FLAIR hyperintense lesions in the periventricular white matter, "
            "consistent with demyelination. No enhancing lesions.")
CT_ABD = "A 1.5 x 1.2 cm hypodense lesion in the pancreatic head. Mild hydronephrosis."
HISTO = ("Prostatic adenocarcinoma, Gleason 3+4=7, grade group 2. Margins are negative. "
         "Perineural invasion is not identified.")
ALL = [("XR", CXR), ("US", THYROID), ("MG", MAMMO), ("DMS", DERM), ("OP", FUNDUS),
       ("MR", MR_BRAIN), ("CT", CT_ABD), ("SM", HISTO)]


def all_targets(text: str, modality: str) -> list[TargetFindings]:
    return make_targets(text, modality, k=200, seed=0, max_edits=1)


def changes(text: str, modality: str) -> set[tuple[str, str, str]]:
    """(attribute, from, to) of every single-edit target."""
    return {(e.attribute, e.from_, e.to) for t in all_targets(text, modality) for e in t.edits}


def texts(text: str, modality: str) -> set[str]:
    return {t.text for t in all_targets(text, modality)}


# --- each kind of edit ------------------------------------------------------------------------

def test_laterality_swaps_sides_lobes_and_keeps_case():
    assert "Small right pleural effusion." in texts("Small left pleural effusion.", "XR")
    assert ("laterality", "right lower lobe", "left lower lobe") in changes(CXR, "XR")
    assert ("laterality", "left", "right") in changes(THYROID, "US")
    assert ("laterality", "right", "left") in changes(MAMMO, "MG")
    assert "Right-sided effusion." in texts("Left-sided effusion.", "CT")
    assert "NODULE IN THE RIGHT UPPER LOBE." in texts("NODULE IN THE LEFT UPPER LOBE.", "CT")
    assert "Fracture of the R femur." in texts("Fracture of the L femur.", "XR")


def test_middle_lobe_maps_to_lingula_because_only_the_right_lung_has_one():
    out = texts("Opacity in the right middle lobe.", "XR")
    assert "Opacity in the lingula." in out
    assert "Opacity in the right lower lobe." in out  # a location edit of the same words
    assert "Opacity in the right middle lobe." in texts("Opacity in the lingula.", "XR")


def test_severity_ladders_move_up_and_down():
    got = changes("Mild hydronephrosis of the left kidney.", "CT")
    assert {("severity", "Mild", "Moderate"), ("severity", "Mild", "Severe")} <= got
    assert ("severity", "moderately", "severely") in changes(
        "The ventricles are moderately dilated.", "MR")
    assert "Large pneumothorax on the right." in texts("Small pneumothorax on the right.", "CT")


def test_presence_flips_negated_and_positive_statements():
    assert "Small pleural effusion." in texts("No pleural effusion.", "XR")
    assert "No pleural effusion." in texts("Small pleural effusion.", "XR")
    assert "There is no focal consolidation." in texts("There is a focal consolidation.", "XR")
    assert "There is an effusion." in texts("There is no effusion.", "CT")  # article agrees
    assert "Focal consolidation is seen." in texts("No focal consolidation is seen.", "XR")
    assert ("presence", "not identified", "identified") in changes(HISTO, "SM")
    assert ("presence", "with", "without") in changes(DERM, "DMS")
    assert "Margins are positive." in texts("Margins are negative.", "SM")


def test_presence_does_not_make_double_negatives():
    out = texts("No mass is seen.", "CT")
    assert "No mass is not seen." not in out


def test_location_swaps_per_modality():
    assert ("location", "upper outer quadrant", "lower inner quadrant") in changes(MAMMO, "MG")
    assert {("location", "macula", "optic disc"), ("location", "macula", "periphery")} <= changes(
        FUNDUS, "OP")
    assert ("location", "periventricular", "juxtacortical") in changes(MR_BRAIN, "MR")
    assert ("location", "pancreatic head", "pancreatic tail") in changes(CT_ABD, "CT")
    derm = {to for a, f, to in changes(DERM, "DMS") if a == "location"}
    assert "thigh" in derm and "back" not in derm  # a site with a side stays a site with one
    assert "Cyst in the lower pole of the kidney." in texts(
        "Cyst in the upper pole of the kidney.", "US")
    assert "Mass at the 9 o'clock position." in texts("Mass at the 3 o'clock position.", "MG")


def test_size_scales_measurements_keeping_units_and_format():
    assert {("size", "2.1 cm", "4.2 cm"), ("size", "2.1 cm", "1.05 cm")} <= changes(THYROID, "US")
    assert ("size", "1.5 x 1.2 cm", "3.0 x 2.4 cm") in changes(CT_ABD, "CT")
    out = texts("An 8 mm nodule.", "CT")
    assert {"A 16 mm nodule.", "A 4 mm nodule."} <= out  # and the article follows the number
    assert "A 3mm stone." in texts("A 6mm stone.", "US")


def test_stage_ladders_keep_the_prefix_as_written():
    got = changes(MAMMO, "MG")
    assert {("stage", "BI-RADS 5", "BI-RADS 2"), ("stage", "BI-RADS 5", "BI-RADS 4")} <= got
    assert "BI-RADS: 4" in " ".join(texts("Assessment BI-RADS: 2.", "MG"))
    assert "Stage II adenocarcinoma." in texts("Stage I adenocarcinoma.", "CT")
    assert "pT3 N0 tumour." in texts("pT1 N0 tumour.", "SM")
    assert ("stage", "Gleason 3+4=7", "Gleason 4+4=8") in changes(HISTO, "SM")
    assert ("stage", "grade group 2", "grade group 4") in changes(HISTO, "SM")
    assert "Proliferative diabetic retinopathy with microaneurysms near the macula" in texts(
        FUNDUS, "OP")
    assert "Severe NPDR." in texts("Mild NPDR.", "OP")


def test_mr_sequences_spine_levels_and_vessel_segments_are_not_tumour_stages():
    for text in (MR_BRAIN, "Compression deformity of the T4 vertebral body.",
                 "Disc bulge at T4-T5.", "Occlusion of the M1 segment of the left MCA."):
        assert not any(e.attribute == "stage" for t in all_targets(text, "MR") for e in t.edits)
    assert "Rectal tumour, T4 N1." in texts("Rectal tumour, T3 N1.", "MR")


def test_count_changes():
    assert ("count", "Multiple", "Single") in changes(MR_BRAIN, "MR")
    assert "Several nodules in the liver." in texts("Two nodules in the liver.", "CT")
    # the article goes with "single"; the noun keeps its number (no pluralising: a known gap)
    assert ("count", "A single", "Multiple") in changes("A single lesion.", "CT")


def test_protected_phrases_are_not_edited():
    text = "PA and lateral views. Small bowel loops. Findings consistent with pneumonia."
    assert make_targets(text, "XR", k=5, seed=0) == []


# --- selection ---------------------------------------------------------------------------------

@pytest.mark.parametrize("modality,text", ALL)
def test_same_seed_same_targets_and_no_duplicates_or_unchanged_text(modality, text):
    a = make_targets(text, modality, k=5, seed=7)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in make_targets(text, modality, 5, 7)]
    assert 1 <= len(a) <= 5
    assert len({t.text for t in a}) == len(a)
    assert all(t.text != text and t.source == "rules" for t in a)


def test_different_seeds_choose_differently():
    chosen = {tuple(t.text for t in make_targets(MAMMO, "MG", 3, seed)) for seed in range(6)}
    assert len(chosen) > 1


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_k_is_respected_and_targets_spread_over_attributes(k):
    out = make_targets(MAMMO, "MG", k=k, seed=3)
    assert len(out) == k and out.reason is None
    if k >= 4:  # MG offers four attributes here: the first four targets use all of them
        assert {t.edits[0].attribute for t in out[:4]} == {"location", "morphology", "stage",
                                                           "laterality"}


def test_pairs_fill_up_when_single_edits_run_out():
    out = make_targets("Left renal cyst.", "CT", k=5, seed=0)
    assert [len(t.edits) for t in out] == [1]  # left -> right is all there is: nothing to pair
    out = make_targets("Mild hydronephrosis of the left kidney.", "CT", k=6, seed=0)
    assert len(out) == 6 and sorted(len(t.edits) for t in out) == [1, 1, 1, 1, 2, 2]
    assert make_targets("Mild hydronephrosis of the left kidney.", "CT", 6, 0, max_edits=1
                        ).reason == "only 4 distinct targets possible (k=6)"


def test_fewer_possible_than_k_returns_fewer_with_a_reason():
    out = make_targets("Left renal cyst.", "CT", k=5, seed=0, max_edits=1)
    assert [t.text for t in out] == ["Right renal cyst."]
    assert out.reason == "only 1 distinct targets possible (k=5)"


def test_nothing_editable_gives_empty_list_and_reason():
    out = make_targets("The study was reviewed.", "CT", k=5, seed=0)
    assert out == [] and out.reason == "no CT rule applies to the text"
    out = make_targets("   \n", "XR", k=5, seed=0)
    assert out == [] and out.reason == "the findings text is empty"
    with pytest.raises(ValueError, match="k must be"):
        make_targets(CXR, "XR", k=0, seed=0)


def test_text_outside_the_edit_is_byte_identical():
    text = "FINDINGS:\n  Small left pleural effusion;  mild  cardiomegaly.\r\nNo pneumothorax!"
    for t in make_targets(text, "CT", k=50, seed=1, max_edits=1):
        (edit,) = t.edits
        starts = [i for i in range(len(text)) if text.startswith(edit.from_, i)]
        assert any(text[:i] + edit.to + text[i + len(edit.from_):] == t.text for i in starts)
    assert "FINDINGS:\n  Small right pleural effusion;  mild  cardiomegaly.\r\nNo pneumothorax!" \
        in {t.text for t in make_targets(text, "CT", k=50, seed=1)}


def test_sentence_start_capitals_are_kept():
    out = texts("Moderate cardiomegaly. Left effusion.", "CT")
    assert "Severe cardiomegaly. Left effusion." in out
    assert "Moderate cardiomegaly. Right effusion." in out


def test_unknown_modality_uses_generic_rules_and_codes_and_aliases_resolve():
    generic = changes(MAMMO, "PET")
    assert ("location", "upper", "lower") in generic  # generic upper <-> lower
    assert not any(to == "lower inner quadrant" for _, _, to in generic)  # no MG quadrant rule
    assert not any(a == "stage" for a, _, _ in generic)  # BI-RADS is an MG/US rule
    assert rules_for("PET").modality == "generic"
    for name in ("mg", "Mg", "mammography"):
        assert changes(MAMMO, name) == changes(MAMMO, "MG")
    for names, code in ((("DERM", "dermoscopy", "Dermatoscopy", "skin"), "DMS"),
                        (("FUNDUS", "fundus", "retina", "CFP"), "OP"),
                        (("HISTO", "histology", "pathology", "histopathology"), "SM"),
                        (("MRI", "mri"), "MR"), (("CXR", "DX", "x-ray"), "XR")):
        for name in names:
            assert canonical_modality(name) == code and rules_for(name).modality == code, name


# --- chest X-ray concept check -----------------------------------------------------------------

def test_xr_targets_are_re_extracted_and_unseen_changes_dropped():
    extractor = default_extractor()
    source = extractor.extract(CXR).concepts
    out = make_targets(CXR, "XR", k=20, seed=0)
    assert out
    for t in out:
        changed = extractor.extract(t.text).concepts != source
        assert t.concepts_changed is changed
        assert changed or {e.attribute for e in t.edits} & {"laterality", "size", "location"}
    kinds = {(t.edits[0].attribute, t.concepts_changed) for t in out if len(t.edits) == 1}
    assert {("laterality", False), ("location", False), ("presence", True)} <= kinds


def test_xr_severity_edit_that_concepts_cannot_see_is_dropped():
    out = make_targets("Moderate cardiomegaly.", "XR", k=10, seed=0)
    assert [t.text for t in out] == ["No cardiomegaly."]  # "Severe cardiomegaly." says the same
    assert out[0].concepts_changed is True
    assert "rejected by the concept check" in out.reason
    ct = make_targets("Moderate cardiomegaly.", "CT", k=10, seed=0)  # no check outside XR
    assert "Severe cardiomegaly." in {t.text for t in ct}
    assert {t.concepts_changed for t in ct} == {None}


# --- rules file --------------------------------------------------------------------------------

def test_rules_file_has_every_modality_and_a_generic_section():
    rules = load_rules()
    assert set(rules.modalities) == {"XR", "CT", "MR", "US", "MG", "DMS", "OP", "SM"}
    assert {"laterality", "severity", "presence", "location", "size", "stage", "count"} <= set(
        rules.generic)


# imaging.yaml codes with no section in targets.yaml: they get the generic rules alone
NO_RULES_SECTION = {"ES", "PT"}


def test_every_imaging_modality_code_resolves_to_its_rules_section():
    codes = imaging_data()["modality_codes"]  # text as found -> the code a Study carries
    sections = set(load_rules().modalities)
    for code in sorted({"CT", *codes.values()}):  # CT: kept as found, so not listed
        assert canonical_modality(code) == code, code  # the sources' codes are canonical here
        if code in NO_RULES_SECTION:
            assert code not in sections and rules_for(code).modality == "generic", code
        else:
            assert code in sections and rules_for(code).modality == code, code
    for name, code in codes.items():  # the names both files know resolve to the same code
        assert canonical_modality(name) == code, name
    assert NO_RULES_SECTION <= set(codes.values())  # the list names only codes imaging.yaml has


def test_malformed_rules_file_is_refused_with_the_place(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generic:\n  laterality:\n    swaps: [[left, right]]\n")
    with pytest.raises(TargetRulesError, match="swaps"):
        load_rules(str(bad))
    bad.write_text("generic:\n  severity:\n    patterns: [{find: '(unclosed', replace: x}]\n")
    with pytest.raises(TargetRulesError, match="bad regular expression"):
        rules_for("CT", str(bad))


# --- LLM rewriting against a loopback server ---------------------------------------------------

class Scripted:
    def __init__(self) -> None:
        self.replies: list[tuple[int, object]] = []
        self.prompts: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.prompts.append(body["messages"][-1]["content"])
                status, content = owner.replies.pop(0) if owner.replies else (500, "down")
                data = json.dumps({"choices": [{"message": {"content": content}}]}
                                  if status == 200 else {"error": content}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.rewriter = LlmRewriter(ChatClient(EndpointConfig(
            url=f"http://127.0.0.1:{self.httpd.server_address[1]}/v1", model="llm",
            retries=1, backoff_s=0.001, timeout_s=5)))


@pytest.fixture
def llm() -> Iterator[Scripted]:
    s = Scripted()
    thread = threading.Thread(target=s.httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def llm_reply(*items: tuple[str, str, str, str]) -> str:
    return json.dumps([{"text": text, "edits": [{"attribute": a, "from": f, "to": to}]}
                       for text, a, f, to in items])


def test_llm_targets_are_used_when_valid(llm: Scripted):
    llm.replies = [(200, "```json\n" + llm_reply(
        ("A 2.1 cm hypoechoic lesion in the right lobe of the thyroid", "laterality", "left",
         "right"),
        ("A 4.5 cm hypoechoic lesion in the left lobe of the thyroid", "Size", "2.1 cm",
         "4.5 cm")) + "\n```")]
    out = make_targets(THYROID, "us", k=3, seed=0, rewriter=llm.rewriter)
    assert [t.source for t in out] == ["llm", "llm"] and out.fallback_reason is None
    assert out[1].edits == [Edit("size", "2.1 cm", "4.5 cm")]
    assert THYROID in llm.prompts[0] and "ultrasound" in llm.prompts[0] and "3" in llm.prompts[0]


@pytest.mark.parametrize("content,why", [
    ("Sure! Here are some edits: left -> right", "not JSON"),
    (json.dumps({"text": "x"}), "non-empty JSON list"),
    (llm_reply((THYROID, "laterality", "left", "left")), "unchanged"),
    (llm_reply(*[(f"text {i}", "size", "a", "b") for i in range(4)]), "more than k=3"),
    (json.dumps([{"text": "A 2.1 cm lesion", "edits": []}]), "edits must be"),
])
def test_bad_llm_reply_falls_back_to_rules_with_the_reason(llm: Scripted, content, why):
    llm.replies = [(200, content)]
    out = make_targets(THYROID, "US", k=3, seed=0, rewriter=llm.rewriter)
    rules = make_targets(THYROID, "US", k=3, seed=0)
    assert [t.text for t in out] == [t.text for t in rules] and len(out) == 3
    assert "RewriteError" in out.fallback_reason and why in out.fallback_reason
    assert all(t.source == "rules" and t.fallback_reason == out.fallback_reason for t in out)


def test_llm_endpoint_errors_fall_back_to_rules(llm: Scripted):
    llm.replies = [(500, "overloaded"), (500, "overloaded")]
    out = make_targets(THYROID, "US", k=2, seed=0, rewriter=llm.rewriter)
    assert len(out) == 2 and all(t.source == "rules" for t in out)
    assert "EndpointError" in out.fallback_reason and "HTTP 500" in out.fallback_reason
    assert len(llm.prompts) == 2  # retried once, then fell back


def test_llm_xr_targets_go_through_the_concept_check(llm: Scripted):
    text = "Moderate cardiomegaly."
    llm.replies = [(200, llm_reply(("Severe cardiomegaly.", "severity", "moderate", "severe"),
                                   ("No cardiomegaly.", "presence", "moderate", "no")))]
    out = make_targets(text, "XR", k=2, seed=0, rewriter=llm.rewriter)
    assert [(t.text, t.source, t.concepts_changed) for t in out] == [
        ("No cardiomegaly.", "llm", True)]
    llm.replies = [(200, llm_reply(("Severe cardiomegaly.", "severity", "moderate", "severe")))]
    out = make_targets(text, "XR", k=2, seed=0, rewriter=llm.rewriter)
    assert out.fallback_reason and "concept check" in out.fallback_reason
    assert [t.text for t in out] == ["No cardiomegaly."]


@pytest.mark.parametrize("text,modality,kept", [
    ("Transverse ultrasound of the liver (curvilinear probe, field depth 15 cm). A 19 mm "
     "anechoic cyst in the right lobe (6.0 cm from the skin).", "US", "19 mm"),
    ("Dermoscopy (polarised, 16 mm field) of a pigmented lesion. A 3.6 mm lesion on the calf.",
     "DMS", "3.6 mm"),
    ("Axial CT with 5 mm slices. A 2 cm hypodense lesion in the left lobe.", "CT", "2 cm"),
])
def test_size_edits_leave_technique_measurements_alone(text, modality, kept):
    """A field depth, a field of view, a slice thickness or a depth from the skin is not a
    finding's size: only the finding's own measurement is scaled."""
    sizes = [e for t in rule_targets(text, modality, 20, seed=0, max_edits=1) for e in t.edits
             if e.attribute == "size"]
    assert sizes and {e.from_ for e in sizes} == {kept}


def test_an_edit_is_made_wherever_its_words_occur_so_the_target_agrees_with_itself():
    text = ("Right mediolateral oblique (MLO) mammogram. A 23 mm oval mass in the central right "
            "breast. Assessment: BI-RADS 3, probably benign.")
    flips = [t for t in rule_targets(text, "MG", 20, seed=0, max_edits=1)
             if [e.attribute for e in t.edits] == ["laterality"]]
    assert flips
    for t in flips:  # the view and the breast change together, in their own case
        assert t.text.startswith("Left mediolateral") and "central left breast" in t.text
        assert "right" not in t.text.lower()
        assert len(t.edits) == 1  # one edit, made twice

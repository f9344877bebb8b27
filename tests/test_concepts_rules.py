"""The rules of docs/concept-labelling.md, one by one, on realistic MIMIC-CXR sentences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advbench.concepts.extract import (
    ConceptExtractor,
    ConceptResult,
    Mention,
    derive_labels,
    extract,
)
from advbench.concepts.vocabulary import CLASSES, CONCEPTS
from advbench.schemas import ConceptsLine

DEV = Path(__file__).parent / "data" / "concepts" / "dev.jsonl"


@pytest.fixture(scope="module")
def x() -> ConceptExtractor:
    return ConceptExtractor()


def states(x: ConceptExtractor, text: str) -> dict[str, str]:
    return x.extract(text).concepts


def report(findings: str, impression: str = "", indication: str = "___M with cough") -> str:
    """A MIMIC-CXR layout around the given sections."""
    text = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n\n"
        f" INDICATION:  {indication}\n\n"
        " TECHNIQUE:  Chest PA and lateral\n\n"
        " COMPARISON:  None.\n\n"
        f" FINDINGS:\n\n {findings}\n"
    )
    if impression:
        text += f"\n IMPRESSION:\n\n {impression}\n"
    return text


def check(x: ConceptExtractor, text: str, expected: dict[str, str]) -> None:
    got = states(x, text)
    wrong = {c: (s, got[c]) for c, s in expected.items() if got[c] != s}
    assert not wrong, f"(expected, got) {wrong} for {text!r}"


# --- negation ------------------------------------------------------------------------------

NEGATIONS = [
    ("No pneumothorax.", "absent_lung_markings"),
    ("There is no focal consolidation.", "consolidation"),
    ("The lungs are clear without consolidation.", "consolidation"),
    ("Negative for pneumonia.", "pneumonitis"),
    ("The lungs are free of focal consolidation.", "consolidation"),
    ("Lungs are clear of effusion.", "effusion"),
    ("Absence of pleural effusion.", "effusion"),
    ("No evidence of pneumonia.", "pneumonitis"),
    ("No radiographic evidence of metastatic disease.", "irregular_parenchyma"),
    ("There is not a pneumothorax on this study.", "absent_lung_markings"),
    ("A pneumothorax is not seen.", "absent_lung_markings"),
    ("Pleural effusions are not identified.", "effusion"),
    ("Pleural effusions are absent.", "effusion"),
    ("Pneumothorax: none.", "absent_lung_markings"),
    ("Pleural effusion: None", "effusion"),
    ("Pneumonia is unlikely.", "pneumonitis"),
    ("The small apical pneumothorax is no longer visualized.", "absent_lung_markings"),
    ("There is neither effusion nor pneumothorax.", "effusion"),
    ("There is neither effusion nor pneumothorax.", "absent_lung_markings"),
    ("No suspicious pulmonary nodules.", "nodule"),
    ("No definite consolidation.", "consolidation"),
    ("The hila are not enlarged.", "irregular_hilum"),
    ("The hemidiaphragms are not flattened.", "irregular_diaphragm"),
    ("No blunting of the costophrenic angles.", "costophrenic_blunting"),
]


@pytest.mark.parametrize(("sentence", "concept"), NEGATIONS)
def test_negation_cues(x, sentence, concept):
    assert states(x, sentence)[concept] == "negative"


def test_negation_covers_a_list(x):
    check(x, "No focal consolidation, pleural effusion, or pneumothorax is seen.",
          {"consolidation": "negative", "effusion": "negative",
           "absent_lung_markings": "negative"})
    check(x, "There is no pleural effusion, pneumothorax or\n focal airspace consolidation.",
          {"effusion": "negative", "absent_lung_markings": "negative",
           "consolidation": "negative"})


def test_post_negation_covers_a_list_joined_by_or(x):
    check(x, "Effusion or pneumothorax is not seen.",
          {"effusion": "negative", "absent_lung_markings": "negative"})
    # ... but not a separate statement before it
    check(x, "Heart size is enlarged, pneumothorax is not seen.",
          {"enlarged_heart": "positive", "absent_lung_markings": "negative"})


# --- uncertainty ---------------------------------------------------------------------------

UNCERTAIN = [
    ("Possible small left pleural effusion.", "effusion"),
    ("Probable right lower lobe pneumonia.", "pneumonitis"),
    ("Findings likely reflect multifocal pneumonia.", "pneumonitis"),
    ("The opacity may represent pneumonia.", "pneumonitis"),
    ("This might reflect an infectious process.", "infection"),
    ("This could be a small effusion.", "effusion"),
    ("Superimposed infection cannot be excluded.", "infection"),
    ("A small pneumothorax is not excluded.", "absent_lung_markings"),
    ("Cannot rule out a small left pleural effusion.", "effusion"),
    ("Right lower lobe opacity concerning for pneumonia.", "pneumonitis"),
    ("A nodule in the left upper lobe, suspicious for malignancy.", "mass"),
    ("Questionable right middle lobe nodule.", "nodule"),
    ("Mediastinal lymphadenopathy is suspected.", "adenopathy"),
    ("Findings are suggestive of pulmonary metastases.", "irregular_parenchyma"),
    ("Blunting of the costophrenic angle suggests a small effusion.", "effusion"),
    ("Differential includes pneumonia and aspiration.", "pneumonitis"),
    ("Heart size is borderline.", "enlarged_heart"),
    ("Borderline cardiomegaly.", "enlarged_heart"),
    ("Equivocal opacity at the left base.", "opacity"),
    ("Pneumonia is less likely.", "pneumonitis"),
    ("Rule out pneumonia.", "pneumonitis"),
    ("Pneumonia is likely.", "pneumonitis"),
    ("Right hilar fullness is questionable.", "irregular_hilum"),
    ("The hemidiaphragms may be slightly flattened on the lateral view.",
     "irregular_diaphragm"),
    ("Possible meniscus along the left lateral chest wall.", "meniscus_sign"),
    ("Possible small amount of fluid in the right major fissure.", "fluid"),
    ("Bilateral pleural effusions are small, if any.", "effusion"),
    ("Minimal, if any, residual pneumothorax.", "absent_lung_markings"),
    ("Pleural effusions, if present, are small.", "effusion"),
    ("A small left pleural effusion may be present.", "effusion"),
    ("Consider pneumonia in the appropriate clinical setting.", "pneumonitis"),
    ("In the appropriate clinical setting, superimposed pneumonia would have to be\n "
     "considered.", "pneumonitis"),
    ("Findings favor atelectasis over pneumonia.", "pneumonitis"),
    ("The cardiac silhouette, which may be mildly enlarged, is exaggerated by technique.",
     "enlarged_heart"),
    ("The right costophrenic angle is possibly blunted.", "costophrenic_blunting"),
]


@pytest.mark.parametrize(("sentence", "concept"), UNCERTAIN)
def test_uncertainty_cues(x, sentence, concept):
    assert states(x, sentence)[concept] == "uncertain"


def test_versus_hedges_both_sides(x):
    check(x, "Right lower lobe consolidation versus atelectasis.",
          {"consolidation": "uncertain"})
    check(x, "Atelectasis vs. pneumonia at the left base.", {"pneumonitis": "uncertain"})
    check(x, "Tiny left apical pneumothorax versus skin fold.",
          {"absent_lung_markings": "uncertain"})


def test_a_hedge_does_not_reach_the_finding_it_explains(x):
    check(x, "Left basilar opacity likely reflects atelectasis, though pneumonia cannot be "
             "excluded.", {"opacity": "positive", "pneumonitis": "uncertain"})
    check(x, "Opacity in the right base concerning for pneumonia.",
          {"opacity": "positive", "pneumonitis": "uncertain"})
    check(x, "Prominence of the left hilum is likely vascular.", {"irregular_hilum": "positive"})


def test_uncertainty_beats_negation_in_one_cue(x):
    check(x, "No large effusion, though a small effusion cannot be excluded.",
          {"effusion": "uncertain"})
    check(x, "Pneumothorax is not excluded.", {"absent_lung_markings": "uncertain"})


def test_a_linking_hedge_inside_a_negation_stays_negative(x):
    check(x, "No focal consolidation to suggest pneumonia.",
          {"consolidation": "negative", "pneumonitis": "negative"})
    check(x, "No opacity concerning for pneumonia.",
          {"opacity": "negative", "pneumonitis": "negative"})


def test_a_new_hedge_after_a_negated_finding_starts_over(x):
    check(x, "No pneumothorax, possible small left effusion.",
          {"absent_lung_markings": "negative", "effusion": "uncertain"})


# --- pseudo-negation and resolution --------------------------------------------------------

POSITIVE = [
    ("No change in the moderate right pleural effusion.", "effusion"),
    ("No interval change in the small left apical pneumothorax.", "absent_lung_markings"),
    ("There is no significant change in the left lower lobe consolidation.", "consolidation"),
    ("Left pleural effusion is not significantly changed.", "effusion"),
    ("Unchanged moderate cardiomegaly.", "enlarged_heart"),
    ("Stable small right pleural effusion.", "effusion"),
    ("Resolving left lower lobe pneumonia.", "pneumonitis"),
    ("Left basilar consolidation has nearly resolved.", "consolidation"),
    ("The right pneumothorax has not completely resolved.", "absent_lung_markings"),
    ("Near complete resolution of the right pleural effusion.", "effusion"),
    ("Partial resolution of the left lower lobe opacity.", "opacity"),
    ("Improving right upper lobe pneumonia.", "pneumonitis"),
    ("Small left pleural effusion, slightly decreased.", "effusion"),
]


@pytest.mark.parametrize(("sentence", "concept"), POSITIVE)
def test_pseudo_negation_and_partial_resolution_stay_positive(x, sentence, concept):
    assert states(x, sentence)[concept] == "positive"


RESOLVED = [
    ("The right pneumothorax has resolved.", "absent_lung_markings"),
    ("Resolution of the left pleural effusion.", "effusion"),
    ("Interval resolution of right lower lobe pneumonia.", "pneumonitis"),
    ("Resolved right lower lobe consolidation.", "consolidation"),
    ("The left lower lobe opacity has cleared.", "opacity"),
]


@pytest.mark.parametrize(("sentence", "concept"), RESOLVED)
def test_resolution_is_negative(x, sentence, concept):
    assert states(x, sentence)[concept] == "negative"


def test_resolved_before_a_list_covers_the_list_only_when_it_opens_the_clause(x):
    check(x, "Resolved pulmonary edema and pleural effusions.", {"effusion": "negative"})
    check(x, "Resolved pneumonia, effusion and pneumothorax.", {
        "pneumonitis": "negative", "effusion": "negative", "absent_lung_markings": "negative"})
    # after its own finding it looks back only
    check(x, "Effusion resolved and pneumothorax is unchanged.",
          {"effusion": "negative", "absent_lung_markings": "positive"})
    check(x, "Effusion resolved, pneumothorax persists.",
          {"effusion": "negative", "absent_lung_markings": "positive"})


def test_a_positive_statement_ends_a_negated_list(x):
    check(x, "No pneumothorax, stable small left pleural effusion.",
          {"absent_lung_markings": "negative", "effusion": "positive"})
    check(x, "No new consolidation, unchanged moderate cardiomegaly.",
          {"consolidation": "negative", "enlarged_heart": "positive"})


# --- clause terminators --------------------------------------------------------------------

TERMINATED = [
    "No pleural effusion, but there is a small right pneumothorax.",
    "No pleural effusion, although a small right pneumothorax is present.",
    "No pleural effusion, though a small right pneumothorax is seen.",
    "No pleural effusion; however, a small right pneumothorax is present.",
    "No pleural effusion however small right pneumothorax.",
    "No pleural effusion, which makes the small right pneumothorax more conspicuous.",
    "No pleural effusion aside from a small right pneumothorax.",
    "No pleural effusion apart from a small right pneumothorax.",
    "No pleural effusion except a small right pneumothorax.",
    "No pleural effusion with the exception of a small right pneumothorax.",
    "No pleural effusion, otherwise small right pneumothorax.",
    "No pleural effusion whereas a small right pneumothorax is present.",
    "No pleural effusion while a small right pneumothorax persists.",
    "No pleural effusion; small right pneumothorax.",
    "No pleural effusion: small right pneumothorax.",
    "No pleural effusion. Small right pneumothorax.",
    "No pleural effusion\n\n Small right pneumothorax",
]


@pytest.mark.parametrize("sentence", TERMINATED)
def test_a_cue_stops_at_a_terminator(x, sentence):
    check(x, sentence, {"effusion": "negative", "absent_lung_markings": "positive"})


def test_a_hedge_stops_where_the_sentence_comes_back_to_its_subject(x):
    check(x, "New left lower lobe opacity, which could reflect aspiration or pneumonia, with "
             "small left pleural effusion.",
          {"opacity": "positive", "pneumonitis": "uncertain", "effusion": "positive"})


def test_a_post_cue_stops_at_a_terminator(x):
    check(x, "Pneumothorax is present, but an effusion is not seen.",
          {"absent_lung_markings": "positive", "effusion": "negative"})


def test_a_cue_does_not_carry_over_a_sentence(x):
    check(x, "No pneumothorax. Small left effusion.",
          {"absent_lung_markings": "negative", "effusion": "positive"})


def test_decimals_and_abbreviations_do_not_end_a_sentence(x):
    # "1.5 cm" and "Dr." keep the negation in one sentence
    check(x, "No nodule larger than 1.5 cm or mass is seen.",
          {"nodule": "negative", "mass": "negative"})
    r = x.extract("Findings discussed with Dr. ___ at 10:15 a.m. Small right pneumothorax.")
    assert r.concepts["absent_lung_markings"] == "positive"


def test_numbered_impression_items_are_sentences(x):
    text = (" IMPRESSION:\n\n 1.  No pneumothorax\n 2.  Small left pleural effusion\n"
            " 3.  Possible right lower lobe pneumonia\n")
    check(x, text, {"absent_lung_markings": "negative", "effusion": "positive",
                    "pneumonitis": "uncertain"})


def test_cue_and_finding_across_a_line_wrap(x):
    check(x, report("There is no focal consolidation, pleural effusion or\n pneumothorax.  "
                    "Right lower lobe opacity is\n concerning for pneumonia."),
          {"absent_lung_markings": "negative", "opacity": "positive",
           "pneumonitis": "uncertain"})


# --- phrases -------------------------------------------------------------------------------

def test_plurals(x):
    check(x, "Small bilateral pleural effusions. Multiple pulmonary nodules and masses. "
             "Bilateral pneumothoraces. Patchy opacities. Osseous metastases. Left hilar "
             "masses.",
          {"effusion": "positive", "nodule": "positive", "mass": "positive",
           "absent_lung_markings": "positive", "opacity": "positive",
           "irregular_parenchyma": "positive", "irregular_hilum": "positive"})


@pytest.mark.parametrize(("a", "b", "concept"), [
    ("Ground-glass opacities.", "Ground glass opacities.", "opacity"),
    ("Blunting of the left costo-phrenic angle.", "Blunting of the left costophrenic angle.",
     "costophrenic_blunting"),
    ("Blunting of the left CP angle.", "Blunting of the left costophrenic angle.",
     "costophrenic_blunting"),
    ("Bilateral air-space disease.", "Bilateral airspace disease.", "pneumonitis"),
    ("Flattening of the hemi-diaphragms.", "Flattening of the hemidiaphragms.",
     "irregular_diaphragm"),
    ("Hilar lymph-adenopathy.", "Hilar lymphadenopathy.", "adenopathy"),
    ("Small left hydro-pneumothorax.", "Small left hydropneumothorax.",
     "absent_lung_markings"),
])
def test_hyphen_and_spacing_variants(x, a, b, concept):
    assert states(x, a)[concept] == states(x, b)[concept] == "positive"


def test_case_does_not_matter(x):
    check(x, "NO PNEUMOTHORAX. LARGE LEFT PLEURAL EFFUSION.",
          {"absent_lung_markings": "negative", "effusion": "positive"})
    check(x, "no Pneumothorax. Large left Pleural Effusion.",
          {"absent_lung_markings": "negative", "effusion": "positive"})


ALL_CONCEPTS = {
    "unremarkable": "No acute cardiopulmonary process.",
    "mass": "There is a large mass in the right upper lobe.",
    "nodule": "A 6 mm nodule in the left lower lobe.",
    "irregular_hilum": "The right hilum is enlarged.",
    "adenopathy": "Mediastinal lymphadenopathy.",
    "irregular_parenchyma": "Innumerable pulmonary metastases.",
    "pneumonitis": "Right lower lobe pneumonia.",
    "consolidation": "Left lower lobe consolidation.",
    "infection": "Findings consistent with infection.",
    "opacity": "Patchy opacity at the right base.",
    "effusion": "Small left pleural effusion.",
    "fluid": "Loculated fluid in the right major fissure.",
    "meniscus_sign": "Large left effusion with a meniscus sign.",
    "costophrenic_blunting": "Blunting of the right costophrenic angle.",
    "enlarged_heart": "Moderate cardiomegaly.",
    "absent_lung_markings": "Large right pneumothorax.",
    "irregular_diaphragm": "Flattening of the left hemidiaphragm.",
}


@pytest.mark.parametrize("concept", CONCEPTS)
def test_every_concept_is_detectable(x, concept):
    assert states(x, ALL_CONCEPTS[concept])[concept] == "positive"


def test_a_phrase_can_name_two_concepts(x):
    check(x, "Left hilar mass.", {"mass": "positive", "irregular_hilum": "positive"})
    check(x, "Right lower lobe consolidative opacity.",
          {"consolidation": "positive", "opacity": "positive"})


def test_qualified_opacities_are_not_opacity(x):
    check(x, "Nodular opacity in the right upper lobe.", {"nodule": "positive",
                                                          "opacity": "absent"})
    check(x, "Rounded opacity in the left lower lobe.", {"mass": "positive",
                                                         "opacity": "absent"})
    check(x, "Right hilar opacity.", {"irregular_hilum": "positive", "opacity": "absent"})
    check(x, "Masslike opacity in the left upper lobe.", {"mass": "positive",
                                                          "opacity": "absent"})


def test_look_alike_phrases_are_not_concepts(x):
    check(x, "Small pericardial effusion.", {"effusion": "absent"})
    check(x, "Findings suggest fluid overload.", {"fluid": "absent"})
    check(x, "Diffuse reticulonodular pattern.", {"nodule": "absent", "opacity": "positive"})
    check(x, "Elevation of the right hemidiaphragm.", {"irregular_diaphragm": "absent"})
    check(x, "No mass effect.", {"mass": "absent"})
    check(x, "Bibasilar atelectasis and mild pulmonary edema.",
          {c: "absent" for c in CONCEPTS})


def test_heart_size_statements(x):
    for sentence, state in [
        ("Heart size is normal.", "negative"),
        ("Normal cardiomediastinal silhouette.", "negative"),
        ("The cardiomediastinal and hilar contours are normal.", "negative"),
        ("Heart size is within normal limits.", "negative"),
        ("Top-normal heart size.", "negative"),
        ("The heart is not enlarged.", "negative"),
        ("Borderline heart size.", "uncertain"),
        ("The heart is mildly enlarged.", "positive"),
        ("Enlarged cardiac silhouette.", "positive"),
        ("Moderate enlargement of the cardiac silhouette.", "positive"),
    ]:
        assert states(x, sentence)["enlarged_heart"] == state, sentence


@pytest.mark.parametrize(("sentence", "want"), [
    ("Hilar contours are normal.", {"irregular_hilum": "negative"}),
    ("The mediastinal and hilar contours are unremarkable.", {"irregular_hilum": "negative"}),
    ("Normal hilar and mediastinal contours.", {"irregular_hilum": "negative"}),
    ("Hila are within normal limits.", {"irregular_hilum": "negative"}),
    ("The cardiomediastinal and hilar contours are within normal limits.",
     {"irregular_hilum": "negative", "enlarged_heart": "negative"}),
    ("Heart size, mediastinal and hilar contours are normal.",
     {"irregular_hilum": "negative", "enlarged_heart": "negative"}),
    ("Heart size and mediastinal contours are normal.", {"enlarged_heart": "negative"}),
    ("Hilar contours are unchanged.", {}),  # a comparison, not a normal statement
    ("Hilar contours are normal but there is a right hilar mass.",
     {"irregular_hilum": "positive", "mass": "positive"}),
])
def test_normal_hila_are_negative(x, sentence, want):
    assert {c: st for c, st in states(x, sentence).items() if st != "absent"} == want


def test_lymphangitic_spread_of_tumor_names_the_tumor_too(x):
    check(x, "Lymphangitic spread of tumor cannot be excluded.",
          {"irregular_parenchyma": "uncertain", "mass": "uncertain"})
    check(x, "Lymphangitic carcinomatosis.", {"irregular_parenchyma": "positive"})


def test_sharp_costophrenic_angles_are_negative(x):
    check(x, "Sharp costophrenic angles.", {"costophrenic_blunting": "negative"})
    check(x, "The costophrenic angles are sharp.", {"costophrenic_blunting": "negative"})
    check(x, "Costophrenic angles are otherwise sharp.", {"costophrenic_blunting": "negative"})


# --- sections ------------------------------------------------------------------------------

def test_indication_and_other_dropped_sections_are_ignored(x):
    text = report("No acute findings. The lungs are clear.", "No acute cardiopulmonary process.",
                  indication="___M with fever, eval for pneumonia or effusion")
    text += ("\n RECOMMENDATION(S):  CT to exclude malignancy.\n\n NOTIFICATION:  Findings "
             "discussed with Dr. ___, who reported a history of lung mass.\n")
    got = states(x, text)
    assert got["pneumonitis"] == got["effusion"] == got["mass"] == "absent"
    assert got["unremarkable"] == "positive"


def test_only_findings_and_impression_count_when_present(x):
    text = ("PA and lateral views. Large right pneumothorax.\n IMPRESSION:  No acute "
            "cardiopulmonary process.\n")
    check(x, text, {"absent_lung_markings": "absent", "unremarkable": "positive"})


def test_report_without_headers_is_read_whole(x):
    text = ("PORTABLE CHEST OF ___\n\n Compared to the prior study, there is a new small left "
            "pleural effusion.  No pneumothorax.\n")
    check(x, text, {"effusion": "positive", "absent_lung_markings": "negative"})


def test_dropped_section_without_findings_header_ends_at_a_blank_line(x):
    text = (" HISTORY:  Status post left lung biopsy, evaluate for pneumothorax.\n\n Portable "
            "AP chest radiograph.  There is a small left apical pneumothorax.\n")
    check(x, text, {"absent_lung_markings": "positive"})
    text = (" INDICATION:  Pneumonia.\n\n COMPARISON:  Chest radiograph ___ showing a "
            "right pleural effusion.\n\n There has been interval improvement of the right "
            "lower lobe consolidation.\n")
    check(x, text, {"pneumonitis": "absent", "effusion": "absent",
                    "consolidation": "positive"})


def test_wet_read_is_ignored_when_findings_exist(x):
    text = (" WET READ: ___ ___ ___ 11:15 PM\n  Right lower lobe opacity concerning for "
            "pneumonia.\n ______________________________________________________________\n"
            + report("The lungs are clear. No pneumothorax.", "No acute cardiopulmonary "
                     "process."))
    check(x, text, {"opacity": "absent", "pneumonitis": "absent", "unremarkable": "positive"})


def test_wet_read_alone_is_the_body(x):
    text = " WET READ: ___ ___ ___ 9:52 PM\n  Small left apical pneumothorax.\n"
    check(x, text, {"absent_lung_markings": "positive"})


def test_header_variants(x):
    for text in [
        " Findings:  Small left pleural effusion.\n Impression:  Small effusion.\n",
        " FINDINGS:  Small left pleural effusion.  IMPRESSION:  Small effusion.\n",
        "FINDINGS\n Small left pleural effusion.\n",
    ]:
        got = x.extract(text)
        assert got.concepts["effusion"] == "positive", text
        assert {m.section for m in got.mentions} <= {"findings", "impression"}, text


def test_mention_sections(x):
    r = x.extract(report("Small left pleural effusion.", "Small left pleural effusion."))
    assert [m.section for m in r.mentions] == ["findings", "impression"]
    r = x.extract("Small left pleural effusion.")
    assert [m.section for m in r.mentions] == ["body"]


# --- unremarkable and labels ---------------------------------------------------------------

def test_unremarkable_rule(x):
    assert states(x, "No acute cardiopulmonary process.")["unremarkable"] == "positive"
    assert states(x, "The lungs are clear. Heart size is normal.")["unremarkable"] == "positive"
    assert states(x, "Normal chest radiograph.")["unremarkable"] == "positive"
    assert states(x, "No radiographic evidence of acute disease.")["unremarkable"] == "positive"
    # a disease concept positive or uncertain makes a normal statement negative
    assert states(x, "Lungs are otherwise clear. Small left pleural effusion.")[
        "unremarkable"] == "negative"
    assert states(x, "No acute cardiopulmonary process. Possible small nodule.")[
        "unremarkable"] == "negative"
    # negated findings do not
    assert states(x, "The lungs are clear. No effusion or pneumothorax.")[
        "unremarkable"] == "positive"
    # organ-level normals are not normal statements
    assert states(x, "Heart size is normal. The mediastinum is unremarkable.")[
        "unremarkable"] == "absent"
    assert states(x, "No acute change.")["unremarkable"] == "absent"  # a comparison
    # CoRPA's phrase "no acute (cardiopulmonary) process": with or without the qualifier
    assert states(x, "No acute process.")["unremarkable"] == "positive"
    assert states(x, "Emphysema.  No acute process.")["unremarkable"] == "positive"


def test_strongest_state_wins(x):
    text = report("No new consolidation. Possible consolidation at the left base.",
                  "Left lower lobe consolidation.")
    assert states(x, text)["consolidation"] == "positive"
    text = report("No pneumothorax.", "A small pneumothorax cannot be excluded.")
    assert states(x, text)["absent_lung_markings"] == "uncertain"


def absent_but(**kw: str) -> dict[str, str]:
    return {c: kw.get(c, "absent") for c in CONCEPTS}


def test_labels_take_the_strongest_state_of_their_concepts():
    labels = derive_labels(absent_but(nodule="uncertain", mass="negative",
                                      enlarged_heart="positive", effusion="negative",
                                      absent_lung_markings="negative",
                                      irregular_diaphragm="uncertain", unremarkable="negative"))
    assert labels == {"healthy": "negative", "cancer": "uncertain", "pneumonia": "absent",
                      "pleural_effusion": "negative", "cardiomegaly": "positive",
                      "pneumothorax": "uncertain"}
    assert list(labels) == list(CLASSES)


def test_opacity_goes_to_pneumonia_only_with_another_pneumonia_concept():
    alone = derive_labels(absent_but(opacity="positive"))
    assert alone["pleural_effusion"] == "positive" and alone["pneumonia"] == "absent"
    with_infection = derive_labels(absent_but(opacity="positive", infection="uncertain"))
    assert with_infection["pneumonia"] == "positive"
    assert with_infection["pleural_effusion"] == "absent"
    negated = derive_labels(absent_but(opacity="positive", pneumonitis="negative"))
    assert negated["pleural_effusion"] == "positive" and negated["pneumonia"] == "negative"


def test_extract_labels_match_derive_labels(x):
    for line in DEV.read_text("utf-8").splitlines()[:60]:
        r = x.extract(json.loads(line)["text"])
        assert r.labels == derive_labels(r.concepts)


# --- output --------------------------------------------------------------------------------

def test_offsets_map_back_to_the_original_text(x):
    for line in DEV.read_text("utf-8").splitlines():
        text = json.loads(line)["text"]
        for m in x.extract(text).mentions:
            assert text[m.start : m.end] == m.text
            assert " ".join(m.text.split()).lower() in m.sentence.lower()


def test_offsets_with_non_ascii_text(x):
    text = "FINDINGS: Ünchanged small İeft pleural effusion. No pneumothorax."
    for m in x.extract(text).mentions:
        assert text[m.start : m.end] == m.text


def test_mention_fields_and_triggers(x):
    text = ("FINDINGS: There is no pleural effusion. Possible right lower lobe pneumonia. "
            "Large left pneumothorax.")
    by = {m.concept: m for m in x.extract(text).mentions}
    assert isinstance(by["effusion"], Mention)
    assert (by["effusion"].state, by["effusion"].trigger) == ("negative", "no")
    assert (by["pneumonitis"].state, by["pneumonitis"].trigger) == ("uncertain", "possible")
    assert (by["absent_lung_markings"].state, by["absent_lung_markings"].trigger) == (
        "positive", None)
    assert by["pneumonitis"].sentence == "Possible right lower lobe pneumonia"
    assert by["effusion"].section == "findings"


def test_to_dict_validates_against_the_output_schema(x):
    for line in DEV.read_text("utf-8").splitlines()[:40]:
        row = json.loads(line)
        out = x.extract(row["text"]).to_dict(row["id"])
        ConceptsLine.model_validate(out)
        assert list(out["concepts"]) == list(CONCEPTS)
        assert list(out["labels"]) == list(CLASSES)


def test_empty_and_blank_reports(x):
    for text in ["", "   \n  ", "FINDINGS:\n\nIMPRESSION:\n"]:
        r = x.extract(text)
        assert set(r.concepts.values()) == {"absent"}
        assert set(r.labels.values()) == {"absent"}
        assert r.mentions == []


def test_module_level_extract_and_result_type():
    r = extract("Moderate cardiomegaly.")
    assert isinstance(r, ConceptResult)
    assert r.concepts["enlarged_heart"] == "positive"
    assert extract("Moderate cardiomegaly.").concepts == r.concepts


def test_extractor_is_deterministic_with_warm_caches(x):
    text = DEV.read_text("utf-8").splitlines()[3]
    first = x.extract(json.loads(text)["text"]).to_dict("a")
    for _ in range(3):
        assert x.extract(json.loads(text)["text"]).to_dict("a") == first
    assert ConceptExtractor().extract(json.loads(text)["text"]).to_dict("a") == first


def test_custom_lexicon_path(tmp_path):
    from importlib import resources

    import yaml

    lex = yaml.safe_load(
        resources.files("advbench.concepts").joinpath("lexicon.yaml").read_text("utf-8"))
    lex["concepts"]["nodule"].append("granulomas?")
    lex["other_findings"] = [p for p in lex["other_findings"] if "granuloma" not in p]
    path = tmp_path / "lexicon.yaml"
    path.write_text(yaml.safe_dump(lex))
    assert ConceptExtractor(path).extract("Calcified granuloma.").concepts["nodule"] == "positive"
    assert ConceptExtractor().extract("Calcified granuloma.").concepts["nodule"] == "absent"


def test_arbitrary_text_never_breaks_the_extractor(x):
    import random

    rng = random.Random(7)
    words = ["no", "not", "possible", "effusion", "pneumothorax", "opacity", "which", "but",
             "cannot be excluded", "versus", ",", ".", ";", ":", "\n", "\n\n", "1.", "___",
             "FINDINGS:", "IMPRESSION:", "INDICATION:", "é", "İ", "(", ")", "/", "-", "  ",
             "has resolved", "no change in", "lungs are clear", "heart size is normal", "?"]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        r = x.extract(text)
        assert list(r.concepts) == list(CONCEPTS)
        for m in r.mentions:
            assert text[m.start : m.end] == m.text
            assert m.state in ("positive", "negative", "uncertain")


# -- the sentence cache gives what scanning every section whole gives -----------------------

def _all_report_texts() -> list[str]:
    texts = []
    for path in sorted(DEV.parent.glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines()
                  if line.strip()]
    return texts


def test_sentence_cache_matches_whole_section_scanning():
    import random

    cached, whole = ConceptExtractor(), ConceptExtractor(sentence_cache=False)
    texts = _all_report_texts()
    rng = random.Random(3)
    sentences = [s for t in texts for s in t.replace("\n", " \n").split(". ")]
    # the same sentences in new company, wraps and case: cache hits inside new reports
    for _ in range(300):
        picked = rng.sample(sentences, rng.randint(1, 8))
        texts.append("FINDINGS: " + ". ".join(picked) + ("." if rng.random() < 0.5 else ""))
        texts.append(" IMPRESSION:\n " + ".\n ".join(s.upper() for s in picked[:2]))
    for _ in range(2):  # the second round is served from the caches
        for text in texts:
            assert cached.extract(text).to_dict("r") == whole.extract(text).to_dict("r"), text


@pytest.mark.parametrize("text", [
    "FINDINGS: Atelectasis vs. pneumonia. No effusion.",
    "FINDINGS: Findings, e.g. effusion, are not seen. Heart size is normal.",
    "FINDINGS: Discussed with Dr. ___ at 3 p.m. today. Small pneumothorax.",
    "e.g. no effusion. Pneumothorax.",
    "FINDINGS: Left effusion (vs. atelectasis). Consolidation is seen.",
    "FINDINGS: A 2.5 cm nodule. Approx. 3 mm pneumothorax, i.e. small.",
    "FINDINGS: Effusion? Possibly. No pneumothorax! Cardiomegaly.",
])
def test_marks_inside_phrases_do_not_cut_sentences(text):
    cached, whole = ConceptExtractor(), ConceptExtractor(sentence_cache=False)
    for _ in range(2):
        assert cached.extract(text).to_dict("r") == whole.extract(text).to_dict("r")
    assert cached.extract(text).concepts == whole.extract(text).concepts


def test_a_phrase_with_a_mark_after_a_space_turns_the_cut_off(tmp_path):
    from importlib import resources

    import yaml

    lex = yaml.safe_load(
        resources.files("advbench.concepts").joinpath("lexicon.yaml").read_text("utf-8"))
    lex["ignore"].append("et al\\.")
    lex["concepts"]["nodule"].append("spot no\\. 2")
    path = tmp_path / "lexicon.yaml"
    path.write_text(yaml.safe_dump(lex))
    x = ConceptExtractor(path)
    assert not x._sentence_cache  # no cheap cut can respect "spot no. 2": scanned whole
    r = x.extract("FINDINGS: As in Smith et al. there is spot no. 2 in the lung. No effusion.")
    assert r.concepts["nodule"] == "positive"
    assert r.concepts["effusion"] == "negative"


@pytest.mark.parametrize(("sentence", "want"), [
    # pleural nodularity is pleural disease, not a lung nodule
    ("Extensive right pleural thickening and nodularity, unchanged.", {}),
    ("New nodularity along the right pleura.", {}),
    ("Diffuse nodularity in both lungs.", {"nodule": "positive"}),
    # a hedge that follows its finding
    ("Opacities may represent edema, though multifocal infection could have a similar "
     "appearance.", {"infection": "uncertain", "opacity": "positive"}),
    # blunted angles, whatever the adverbs
    ("The right costophrenic angle remains slightly blunted.",
     {"costophrenic_blunting": "positive"}),
    ("The costophrenic angles are not blunted.", {"costophrenic_blunting": "negative"}),
    ("Costophrenic angles are otherwise sharp.", {"costophrenic_blunting": "negative"}),
    # fluid in a fissure, with a verb between
    ("Fluid is seen within the minor fissure.", {"fluid": "positive"}),
    ("Fluid extends into the right major fissure.", {"fluid": "positive"}),
    ("No fluid is seen in the fissures.", {"fluid": "negative"}),
    # qualified opacities with the location between
    ("Rounded left lower lobe opacity.", {"mass": "positive"}),
    ("Enlarging masslike right lower lobe opacity.", {"mass": "positive"}),
    ("Nodular right upper lobe opacity.", {"nodule": "positive"}),
    # near resolution is not resolution
    ("Near resolution of right lower lobe pneumonia.", {"pneumonitis": "positive"}),
    ("Near complete resolution of the effusion.", {"effusion": "positive"}),
    ("Complete resolution of the effusion.", {"effusion": "negative"}),
    ("Differential diagnosis includes organizing pneumonia and adenocarcinoma.",
     {"pneumonitis": "uncertain", "mass": "uncertain"}),
    # organ normals in one list
    ("Heart size, mediastinal contours, and hila are normal.",
     {"enlarged_heart": "negative", "irregular_hilum": "negative"}),
    ("Normal heart size, mediastinal and hilar contours.",
     {"enlarged_heart": "negative", "irregular_hilum": "negative"}),
    ("Normal cardiomediastinal and hilar contours.",
     {"enlarged_heart": "negative", "irregular_hilum": "negative"}),
    ("Small left pleural effusion blunts the costophrenic angle.",
     {"effusion": "positive", "costophrenic_blunting": "positive"}),
    ("Chronic interstitial lung disease without superimposed acute process.",
     {"unremarkable": "positive"}),
    ("Pneumonia or aspiration in the differential.", {"pneumonitis": "uncertain"}),
    ("Atelectasis and/or pneumonia.", {"pneumonitis": "uncertain"}),
    ("No effusion and/or pneumothorax.",  # the negation stays in force
     {"effusion": "negative", "absent_lung_markings": "negative"}),
    ("Right lower lobe opacity, compatible with infection in the appropriate clinical setting.",
     {"opacity": "positive", "infection": "uncertain"}),
    ("Small pleural effusions may be present bilaterally.", {"effusion": "uncertain"}),
    ("Normal PA and lateral chest radiograph.", {"unremarkable": "positive"}),
    ("Stable chest radiograph without acute abnormality.", {"unremarkable": "positive"}),
    ("Round opacity in the left upper lobe.", {"mass": "positive"}),
    ("Enlarged right paratracheal lymph node.", {"adenopathy": "positive"}),
    ("Mediastinal lymph nodes are not enlarged.", {"adenopathy": "negative"}),
    ("No pleural effusion and the heart remains enlarged.",
     {"effusion": "negative", "enlarged_heart": "positive"}),
    ("No focal consolidation is seen, and the right pleural effusion has increased.",
     {"consolidation": "negative", "effusion": "positive"}),
    ("Hyperinflation, with diaphragms flattened on the lateral view.",
     {"irregular_diaphragm": "positive"}),
    ("Interval increase in the size of the cardiac silhouette.", {"enlarged_heart": "positive"}),
    ("Normal cardiomediastinal silhouette and hilar contours.",
     {"enlarged_heart": "negative", "irregular_hilum": "negative"}),
    ("No acute findings in the chest.", {"unremarkable": "positive"}),
    ("No acute osseous findings.", {}),
    ("The right hilum appears slightly more prominent.", {"irregular_hilum": "positive"}),
    ("A small amount of fluid layers dependently in the right pleural space.",
     {"fluid": "positive"}),
    ("Thickening of the minor fissure may represent a small amount of fluid.",
     {"fluid": "uncertain"}),
    ("Enlarged aortopulmonary window lymph nodes.", {"adenopathy": "positive"}),
    ("Fluid overload.", {}),
    # terse and abbreviated reports
    ("No PNA.", {"pneumonitis": "negative"}),
    ("Cannot exclude early PNA.", {"pneumonitis": "uncertain"}),
    ("Heart nl size.", {"enlarged_heart": "negative"}),
    ("Heart/mediastinum nl.", {"enlarged_heart": "negative"}),
    ("Mediastinal and hilar contours nl.", {"irregular_hilum": "negative"}),
    ("DDx includes cavitary neoplasm or infection.",
     {"mass": "uncertain", "infection": "uncertain"}),
    ("New 2.3 cm rounded RLL opacity.", {"mass": "positive"}),
    ("Post-pneumonectomy space filled with fluid.", {"fluid": "positive"}),
])
def test_held_out_phrasings(x, sentence, want):
    """Phrasings the independently labelled sets found missing, each as the labeller read it."""
    got = states(x, "FINDINGS: " + sentence)
    assert {c: st for c, st in got.items() if st != "absent"} == want


def test_bone_normals_are_not_whole_study_normals(x):
    for sentence in ("Visualized osseous structures are without acute abnormality.",
                     "No acute osseous abnormality."):
        assert states(x, "FINDINGS: " + sentence)["unremarkable"] == "absent", sentence


# -- text written elsewhere (docs/concept-labelling.md, "Text written elsewhere") -------------

ELSEWHERE = [
    # coordinated modifiers before a shared head
    ("No enlarged mediastinal, hilar, or axillary lymph nodes.", {"adenopathy": "negative"}),
    ("Enlarged paratracheal, subcarinal and right hilar lymph nodes.",
     {"adenopathy": "positive"}),
    ("No abnormally enlarged thoracic lymph nodes.", {"adenopathy": "negative"}),
    ("Lymph nodes with short axis below 1 cm in the prevascular region.",
     {"adenopathy": "negative"}),
    ("Mediastinal lymph nodes are prominent but not enlarged.", {"adenopathy": "negative"}),
    # organ normals
    ("The heart and pericardium are normal.", {"enlarged_heart": "negative"}),
    ("Normal-sized heart.", {"enlarged_heart": "negative"}),
    ("Cardiac chambers are normal in size.", {"enlarged_heart": "negative"}),
    ("Heart size and pulmonary vascularity are normal.", {"enlarged_heart": "negative"}),
    ("The heart is in the upper limits of normal in size.", {"enlarged_heart": "negative"}),
    ("Pleural spaces are clear.", {"effusion": "negative"}),
    ("No pleural abnormality or pneumothorax.",
     {"effusion": "negative", "absent_lung_markings": "negative"}),
    # synonyms and whole-study prose
    ("Left lower lobe infiltrate.", {"opacity": "positive"}),
    ("Ground-glass attenuation in the right upper lobe.", {"opacity": "positive"}),
    ("The chest x-ray obtained on admission was unremarkable.", {"unremarkable": "positive"}),
    ("Chest x-ray is negative for pneumonia.", {"pneumonitis": "negative"}),
    ("No active disease.", {"unremarkable": "positive"}),
    # section headers
    ("FINDINGS:\nLUNGS: Clear.\nPLEURA: Normal.\nHEART: Normal size.\nHILA: Normal.\n"
     "LYMPH NODES: Normal.\nMEDIASTINUM: Normal.",
     {"unremarkable": "positive", "effusion": "negative", "enlarged_heart": "negative",
      "irregular_hilum": "negative", "adenopathy": "negative"}),
    ("FINDINGS:\nLYMPHADENOPATHY: None.\nPNEUMOTHORAX: Absent.",
     {"adenopathy": "negative", "absent_lung_markings": "negative"}),
    ("FINDINGS:\nEFFUSION: Possible trace right.", {"effusion": "uncertain"}),
    ("FINDINGS:\nPTX: Resolved.", {"absent_lung_markings": "negative"}),
    ("IMPRESSION: Resolved right middle lobe consolidation.", {"consolidation": "negative"}),
    # outside the chest
    ("There is good contrast opacification of the pulmonary arteries.", {}),
    ("PULMONARY ARTERIES: Well opacified. No filling defect.", {}),
    ("Multiple thyroid nodules, the largest 1.2 cm.", {}),
    ("The thyroid gland is heterogeneous with a 1.5 cm right nodule.", {}),
    ("Nodular peritoneal disease in the upper abdomen.", {}),
    ("Small pericardial effusion. Right knee effusion.", {}),
    ("Hepatic metastases.", {"irregular_parenchyma": "positive"}),
    ("Soft tissue mass in the right upper lobe.", {"mass": "positive"}),
    # shorthand
    ("RLL opacity, ?PNA.", {"opacity": "positive", "pneumonitis": "uncertain"}),
    ("? small effusion.", {"effusion": "uncertain"}),
    ("Patchy opacity, ?early pneumonia.", {"opacity": "positive", "pneumonitis": "uncertain"}),
    ("Consolidation, pneumonia? Drainage is recommended.",
     {"consolidation": "positive", "pneumonitis": "uncertain"}),
    ("Query early right basilar pneumonia; no effusion.",
     {"pneumonitis": "uncertain", "effusion": "negative"}),
    ("The expiratory view rules out a pneumothorax.", {"absent_lung_markings": "negative"}),
    ("Innumerable pulmonary nodules, miliary tuberculosis versus metastatic disease.",
     {"nodule": "positive", "irregular_parenchyma": "uncertain"}),
    ("Pure ground-glass nodule in the right upper lobe.", {"nodule": "positive"}),
    ("CXR w/o focal consolidation. No eff.",
     {"consolidation": "negative", "effusion": "negative"}),
]


@pytest.mark.parametrize(("text", "want"), ELSEWHERE)
def test_text_written_elsewhere(x, text, want):
    got = {c: s for c, s in states(x, text).items() if s != "absent"}
    assert got == want


def test_a_question_mark_hedges_only_with_its_own_text_in_the_caches(x):
    """'?' is the one token whose text does not decide its phrase; the caches must not mix
    "? effusion" (a hedge) with "effusion?" and "effusion." in any order."""
    for text in ("Small effusion.", "? Small effusion.", "Small effusion?", "Small effusion."):
        want = "uncertain" if "?" in text else "positive"
        assert x.extract(text).concepts["effusion"] == want, text


def _lexicon_with(tmp_path: Path, edit) -> Path:
    from importlib import resources

    import yaml

    lex = yaml.safe_load(
        resources.files("advbench.concepts").joinpath("lexicon.yaml").read_text("utf-8"))
    edit(lex)
    path = tmp_path / "lexicon.yaml"
    path.write_text(yaml.safe_dump(lex))
    return path


def test_a_both_ways_cue_leaves_the_direction_of_the_cues_after_it(tmp_path):
    def edit(lex):
        lex["cues"]["resolution_pre"].insert(0, "gone")
        lex["cues"]["resolution_post"].insert(0, "gone")

    x2 = ConceptExtractor(_lexicon_with(tmp_path, edit))
    text = "Known lung cancer and resolution of the consolidation."
    assert states(x2, text)["mass"] == "positive"
    assert states(x2, text)["consolidation"] == "negative"


def test_fragments_fill_phrases_and_an_unknown_one_is_named(tmp_path):
    from advbench.concepts.extract import LexiconError

    def edit(lex):
        lex["fragments"]["sites"] = "apical|basal"
        lex["concepts"]["nodule"].append("(<sites>) spot")

    assert states(ConceptExtractor(_lexicon_with(tmp_path, edit)),
                  "Apical spot.")["nodule"] == "positive"

    def bad(lex):
        lex["concepts"]["nodule"].append("<nowhere> spot")

    with pytest.raises(LexiconError, match="unknown fragment <nowhere>"):
        ConceptExtractor(_lexicon_with(tmp_path, bad))


def test_the_packaged_lexicon_keeps_the_cheap_sentence_cut(x):
    """A phrase with a literal sentence mark after a space or group ("less than 0.5") turns the
    sentence cache off for every report (and with it the sentence spans the CoRPA writer uses);
    such marks go inside a raw {regex}."""
    assert x._sentence_cache
    assert len(x.sentence_spans("FINDINGS: No effusion. Heart size is normal.")) == 2


@pytest.mark.parametrize(("text", "want"), [
    # no FINDINGS header: a dropped line ends where the organ headers start
    ("CT THORAX\nHistory: Weight loss. ?malignancy.\nComparison: CXR 2 weeks ago.\n"
     "Lungs: No pulmonary nodule.\nPleura: No effusion.\nConclusion: Normal CT thorax.",
     {"unremarkable": "positive", "nodule": "negative", "effusion": "negative"}),
    # a dropped header inside FINDINGS holds its line; the findings go on after it
    ("FINDINGS:\nComparison: CT 4 months ago.\nNew small right pleural effusion.\n"
     "IMPRESSION: Small right effusion.\n RECOMMENDATION(S):  Follow-up.\n",
     {"effusion": "positive"}),
    # ... and a wrapped dropped line stays dropped
    ("IMPRESSION:  No pneumothorax.\n NOTIFICATION:  The findings were discussed with Dr. ___\n"
     " who asked about a mass.\n", {"absent_lung_markings": "negative"}),
    # a header with a qualifier
    ("FINDINGS (CHEST):\nHeart size normal.\nIMPRESSION:\nRib fracture.",
     {"enlarged_heart": "negative"}),
])
def test_section_boundaries_in_templates(x, text, want):
    got = {c: s for c, s in states(x, text).items() if s != "absent"}
    assert got == want

"""The CoRPA reference concept extractor, re-implemented for the side-by-side benchmark.

This follows the published algorithm step by step (see ``../shared/reference/corpa.md``,
"Reference extraction and its known flaws"), flaws included, so that ``bench/concepts.py`` can
time it next to ours on the same reports:

- the report is read as lines; the text starts at the first FINDINGS or IMPRESSION line (or a
  line naming the chest that is not a PA header); upper-case words, ``_``, ``:`` and commas are
  blanked; the text is lower-cased and split on full stops;
- sentences that start with "no", "there is no" or "no evidence of", or that contain one of a
  list of words ("comparison", "exclude", "resolved", ...), are dropped; a sentence is cut at
  "without", " no ", "rule out", "clear of", "check for" ...;
- a phrase marked *whole* must equal one space-separated token (so multi-word whole phrases
  never match, the reference's bug); other phrases match when all their words are tokens of
  the sentence (after adding hilum/heart synonyms);
- output is binary, one flag per concept; any disease flag clears ``unremarkable``.

It is not used by advbench itself: only the benchmark imports it.
"""

from __future__ import annotations

import re

# (phrase, whole) per concept, in vector order: the reference's phrase lists.
PHRASES: dict[str, list[tuple[str, bool]]] = {
    "unremarkable": [("normal", True), ("unremarkable", True), ("lungs clear", False),
                     ("no evidence", True), ("no interval change", False),
                     ("no acute cardiopulmonary abnormality", False),
                     ("normal hilar contours", False), ("no acute process", False)],
    "mass": [(p, p not in ("cavitary lesion", "rounded opacity")) for p in (
        "mass", "cavitary lesion", "carcinoma", "neoplasm", "tumor", "tumour", "rounded opacity",
        "lung cancer", "apical opacity", "lump", "triangular opacity", "malignant",
        "malignancy")],
    "nodule": [(p, True) for p in ("nodular density", "nodular densities", "nodular opacity",
                                   "nodular opacities", "nodular opacification", "nodule")],
    "irregular_hilum": [("hilar mass", True), ("hilar opacity", True), ("hilus enlarged", False),
                        ("hilus fullness", False), ("hilus bulbous", False)],
    "adenopathy": [(p, True) for p in ("hilar adenopathy", "hilar lymphadenopathy",
                                       "mediastinal lymphadenopathy", "mediastinal adenopathy")],
    "irregular_parenchyma": [(p, True) for p in ("pulmonary metastasis", "carcinomatosis",
                                                 "metastatic disease")],
    "pneumonitis": [(p, True) for p in ("pneumonia", "pneumonitis", "bronchopneumonia",
                                        "airspace disease", "air bronchograms", "cavitation")],
    "consolidation": [("consolidation", True)],
    "infection": [(p, True) for p in ("infection", "infectious process", "infectious")],
    "opacity": [(p, True) for p in (
        "airspace opacities", "airspace opacity", "homogeneous opacity", "homogeneous opacities",
        "patchy opacities", "patchy opacity", "ground-glass opacities", "ground-glass opacity",
        "alveolar opacities", "alveolar opacity", "ill-defined opacities",
        "reticulonodular pattern")],
    "effusion": [(p, True) for p in ("effusion", "effusions", "pleural effusion")],
    "fluid": [("pleural fluid", True), ("fluid collection", True), ("layering fluid", False)],
    "meniscus_sign": [("meniscus sign", True)],
    "costophrenic_blunting": [("costophrenic angle blunting", False)],
    "enlarged_heart": [("cardiomegaly", True), ("borderline cardiac silhouette", False),
                       ("heart enlarged", False), ("prominent cardiac silhouette", False),
                       ("top-normal heart", False)],
    "absent_lung_markings": [(p, p != "absent lung markings") for p in (
        "apical pneumothorax", "basilar pneumothorax", "hydro pneumothorax", "hydropneumothorax",
        "lateral pneumothorax", "pneumothorax", "pneumothoraces", "absent lung markings")],
    "irregular_diaphragm": [("flattening ipsilateral diaphragm", False),
                            ("inversion ipsilateral diaphragm", False)],
}
CONCEPTS = list(PHRASES)

DROP_STARTS = ("no ", "there is no ", "no evidence of")
DROP_CONTAINING = ("nipple", "comparison", "assess", "clinical setting", "not enlarged",
                   "not visible", "evaluation", "not evident", "exclude", "resolved", "granuloma")
CUT_AT = ("without", " no ", "rule out", "clear of", "check for", "should not be mistaken for")

_UPPER_WORD = re.compile(r"\b[A-Z]+\b")
_BLANKS = re.compile(r"_|:")
_SPACES = re.compile(r"\s+")
_LETTER = re.compile(r"[a-zA-Z]+")


def clean_report(text: str) -> list[str]:
    """The sentences the reference looks at, after its cleaning and negation handling."""
    lines = [line for line in text.splitlines(keepends=True) if line != " \n"]
    impression = findings = None
    for i, line in enumerate(lines):
        if "IMPRESSION:" in line:
            impression = i
        elif "FINDINGS:" in line or ("CHEST" in line and "PA" not in line):
            findings = i
    start = 0
    if impression is not None:
        start = impression
    if findings is not None and (impression is None or findings < impression):
        start = findings
    out = ""
    for line in lines[start:]:
        line = _UPPER_WORD.sub(" ", line)
        line = _BLANKS.sub(" ", line).replace("\n", " ").replace(",", " ").replace("\t", " ")
        out += _SPACES.sub(" ", line).lstrip(" ")
    sentences = [s[1:] if s.startswith(" ") else s for s in out.split(".")]
    sentences = [s.lower() for s in sentences]
    kept = [s for s in sentences
            if len(s) > 2 and len(s.split()) > 1 and _LETTER.search(s)
            and not s.startswith(DROP_STARTS)
            and not any(word in s for word in DROP_CONTAINING)]
    cut = []
    for s in kept:
        for marker in CUT_AT:
            if marker in s:
                s = s[: s.index(marker)]
        cut.append(s)
    return cut


def _with_synonyms(sentence: str) -> str:
    """The reference appends synonyms to the sentence each time it tries a word-set phrase
    (so a sentence grows while it is scanned); kept, as it is part of its cost."""
    if "hilus" in sentence:
        return sentence + " hilum hilar"
    if "hilum" in sentence:
        return sentence + " hilus hilar"
    if "hilar" in sentence:
        return sentence + " hilus hilum"
    if "heart" in sentence:
        return sentence + " size cardiac shadow silhouette contour"
    if "cardiac" in sentence and "silhouette" in sentence:
        return sentence + " size heart shadow contour"
    if "enlarged" in sentence:
        return sentence + " larger enlargement"
    return sentence


def concept_flags(sentences: list[str]) -> list[int]:
    """Binary flags over some sentences: every phrase of every concept is tried on every
    sentence, splitting the sentence again for each phrase, as the reference does."""
    flags = [0] * len(CONCEPTS)
    for line in sentences:
        for i, phrases in enumerate(PHRASES.values()):
            for phrase, whole in phrases:
                if whole:
                    if phrase in line.split(" "):
                        flags[i] = 1
                else:
                    line = _with_synonyms(line)
                    tokens = line.split(" ")
                    if all(word in tokens for word in phrase.split(" ")):
                        flags[i] = 1
    if any(flags[1:]):
        flags[0] = 0
    return flags


def extract(text: str) -> dict[str, int]:
    """Binary concept flags of one report, as the reference computes them: once over the
    whole report and once per sentence (the reference keeps both and checks they agree)."""
    sentences = clean_report(text)
    flags = concept_flags(sentences)
    for sentence in sentences:
        concept_flags([sentence])
    return dict(zip(CONCEPTS, flags, strict=True))

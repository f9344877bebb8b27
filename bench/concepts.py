"""Benchmark of the concept extractor: reports/s on one process and on two.

A deterministic synthetic corpus of MIMIC-CXR-like reports (headers, "___" placeholders, hard
line wraps, numbered impressions, all 17 concepts under every kind of cue) stands in for the
credentialed reports, which cannot ship with the repository. The default size mirrors
MIMIC-CXR (227,835 reports). The CoRPA reference extractor (``bench/corpa_reference.py``, its
published algorithm re-implemented) is timed on a subset in the same run, for the ratio, and
both are scored on the frozen labelled set (binary: positive or not).

    .venv/bin/python bench/concepts.py [--reports N] [--processes 1 2] [--reference-reports N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpa_reference  # noqa: E402
from mimic_layout import final_report, wrap_report  # noqa: E402

from advbench.concepts.extract import ConceptExtractor, _lower  # noqa: E402

MIMIC_REPORTS = 227_835
TARGET_PER_SECOND = 15_000  # one process
TARGET_ALL_SECONDS = 30.0  # all MIMIC-CXR reports, two processes
TARGET_COMMAND = 18_000  # `advbench concepts --workers 2`, whole command, reports/s
TARGET_VS_REFERENCE = 10.0  # the whole command on 2 workers vs the CoRPA reference
FROZEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "concepts" / "frozen.jsonl"

# --- synthetic corpus ---------------------------------------------------------------------

INDICATIONS = [
    "___M with cough and fever, eval for pneumonia",
    "___F with shortness of breath",
    "___-year-old woman with history of breast cancer, now with dyspnea.",
    "___M s/p CABG, eval for effusion",
    "___F with chest pain",
    "History: ___M with CHF exacerbation",
    "___M intubated, evaluate ET tube position",
    "___F with known lung mass, interval evaluation",
    "___M s/p right chest tube placement for pneumothorax",
]
TECHNIQUES = ["Chest PA and lateral", "Portable AP chest", "Single frontal view of the chest"]
COMPARISONS = ["None.", "___", "Chest radiograph ___.", "Prior exam from ___.", "CT chest ___"]
NORMAL_FINDINGS = [
    "The lungs are clear without focal consolidation, pleural effusion or pneumothorax.",
    "There is no focal consolidation, pleural effusion or pneumothorax.",
    "The cardiomediastinal silhouette is normal.",
    "Heart size is normal. The mediastinal and hilar contours are unremarkable.",
    "Imaged osseous structures are intact. No free air below the right hemidiaphragm is seen.",
    "Lungs are well expanded and clear. No pleural effusion.",
    "No acute osseous abnormality. Minimal degenerative changes of the thoracic spine.",
    "There is no pneumothorax.",
    "Costophrenic angles are sharp.",
]
FINDING_SENTENCES = [
    "There is a {size} {side} pleural effusion with adjacent atelectasis.",
    "{Size} {side} pleural effusion is {change} compared to the prior study.",
    "{Desc} opacity at the {side} {loc} may represent atelectasis, though infection "
    "cannot be excluded.",
    "There is focal consolidation in the {side} {loc}, concerning for pneumonia.",
    "{Side} {loc} consolidative opacity with air bronchograms.",
    "A {cm} cm nodule in the {side} {loc} is suspicious for neoplasm.",
    "There is a {cm} cm spiculated mass in the {side} {loc} with {side} hilar fullness.",
    "Mediastinal lymphadenopathy is suspected.",
    "Multiple bilateral pulmonary nodules, consistent with metastatic disease.",
    "{Grade} cardiomegaly is {change}. Mild pulmonary vascular congestion.",
    "The heart is {grade} enlarged.",
    "Heart size is borderline.",
    "There is a {size} {side} apical pneumothorax, which is {change}.",
    "The {side} pneumothorax has resolved after chest tube placement.",
    "No change in the {size} {side} pleural effusion.",
    "Blunting of the {side} costophrenic angle, possibly a {size} effusion.",
    "Loculated fluid is seen in the {side} major fissure.",
    "{Size} {side} pleural effusion with a meniscus sign.",
    "The lungs are hyperinflated with flattening of the diaphragms.",
    "{Desc} bibasilar opacities likely reflect atelectasis; pneumonia is less likely.",
    "{Desc} opacities in both lower lobes could represent atypical infection or edema.",
    "Previously seen {side} {loc} consolidation has nearly resolved.",
    "No {new}consolidation to suggest pneumonia.",
    "{Side} {loc} opacity versus atelectasis.",
    "Diffuse reticulonodular pattern is {change}.",
    "There is no {neg_list}.",
    "No {neg_list} is seen.",
    "{Desc} {side} {loc} opacity is {change}, {hedge} pneumonia.",
    "The {side} costophrenic angle is sharp.",
    "Endotracheal tube terminates {cm} cm above the carina. Nasogastric tube courses below "
    "the diaphragm with the tip out of view.",
    "{Side} internal jugular central venous catheter terminates in the mid SVC.",
    "Sternotomy wires are intact. There is no pneumothorax.",
    "Evaluation is limited by low lung volumes and patient rotation.",
]
SIDES = ["right", "left"]
SIZES = ["small", "moderate", "large", "trace", "tiny", "small-to-moderate", "moderate-sized"]
LOCATIONS = ["lower lobe", "upper lobe", "lung base", "mid lung", "middle lobe", "lingula",
             "retrocardiac region", "perihilar region", "apex", "costophrenic region"]
DESCRIPTORS = ["patchy", "hazy", "ill-defined", "streaky", "confluent", "ground-glass",
               "airspace", "subtle", "increased", "new", "faint", "linear"]
CHANGES = ["unchanged", "stable", "slightly increased", "slightly decreased", "new",
           "improved", "worse", "similar", "more conspicuous", "less prominent"]
GRADES = ["mildly", "moderately", "markedly", "slightly", "severely"]
HEDGES = ["concerning for", "possibly", "suspicious for", "which may represent",
          "likely representing", "compatible with", "worrisome for", "could reflect"]
NEGATED = ["focal consolidation", "pleural effusion", "pneumothorax", "pulmonary edema",
           "large effusion", "confluent consolidation", "definite pneumonia", "mass"]
IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "{Side} lower lobe pneumonia.",
    "Small {side} pleural effusion, slightly increased.",
    "Possible early pneumonia at the {side} base.",
    "Stable moderate cardiomegaly without pulmonary edema.",
    "{Side} upper lobe mass, concerning for malignancy. Recommend CT for further evaluation.",
    "No pneumothorax.",
    "Lines and tubes in appropriate position.",
    "Findings were discussed with Dr. ___ at 10:15 a.m. on ___.",
]


def synthetic_report(rng: random.Random) -> str:
    """One MIMIC-like report; its shape and length vary like the real ones."""

    def fill(s: str) -> str:
        side, size, loc = rng.choice(SIDES), rng.choice(SIZES), rng.choice(LOCATIONS)
        desc, grade = rng.choice(DESCRIPTORS), rng.choice(GRADES)
        negated = rng.sample(NEGATED, rng.choice([1, 2, 3, 3, 4]))
        neg_list = negated[0] if len(negated) == 1 else (
            ", ".join(negated[:-1]) + rng.choice([", or ", " or ", ", nor "]) + negated[-1])
        return s.format(side=side, Side=side.capitalize(), size=size, Size=size.capitalize(),
                        loc=loc, desc=desc, Desc=desc.capitalize(), grade=grade,
                        Grade=grade.capitalize(), change=rng.choice(CHANGES),
                        hedge=rng.choice(HEDGES), neg_list=neg_list,
                        new=rng.choice(["", "new ", "definite ", "focal "]),
                        cm=rng.choice(["1.2", "2.5", "3", "0.8", "4.5", "1.6"]))

    n_find = rng.choice([1, 2, 3, 3, 4, 5, 6, 8])
    sentences = [fill(s) for s in rng.sample(FINDING_SENTENCES, n_find)]
    sentences += rng.sample(NORMAL_FINDINGS, rng.choice([1, 2, 3]))
    rng.shuffle(sentences)
    findings = "  ".join(sentences)
    impression = [fill(s) for s in rng.sample(IMPRESSIONS, rng.choice([1, 1, 2, 3]))]
    shape = rng.random()
    if shape < 0.08:  # no headers at all
        return wrap_report(findings + "  " + " ".join(impression)) + "\n"
    if shape < 0.16:  # impression only
        return " IMPRESSION:  " + wrap_report(" ".join(impression)).lstrip() + "\n"
    parts = []
    if shape < 0.22:
        parts += [" WET READ: ___ ___ ___ 10:42 PM", wrap_report(impression[0]), " " + "_" * 78]
    indication = rng.choice(INDICATIONS)
    technique = rng.choice(TECHNIQUES)
    parts += final_report(indication, technique, rng.choice(COMPARISONS), findings, impression)
    return "\n".join(parts) + "\n"


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [synthetic_report(rng) for _ in range(n)]


# --- timing -------------------------------------------------------------------------------

_WORKER: ConceptExtractor | None = None
_TEXTS: list[str] = []  # the corpus, inherited by forked workers (not pickled to them)


def _init_worker() -> None:
    global _WORKER
    _WORKER = ConceptExtractor()


def _work(span: tuple[int, int]) -> int:
    assert _WORKER is not None
    extract = _WORKER.extract
    n = 0
    for text in _TEXTS[span[0] : span[1]]:
        n += len(extract(text).mentions)
    return n


def time_one_process(texts: list[str], extractor: ConceptExtractor | None = None,
                     ) -> tuple[float, float]:
    """Wall and CPU seconds for one process to extract every report (extractor built before).

    The CPU time is what the process itself used: on a shared machine it is the steadier
    figure; the wall time is the one judged.
    """
    extract = (extractor or ConceptExtractor()).extract
    c0, t0 = time.process_time(), time.perf_counter()
    for text in texts:
        extract(text)
    return time.perf_counter() - t0, time.process_time() - c0


def time_pool(texts: list[str], processes: int, chunk: int = 2000) -> float:
    """Seconds end to end with a process pool: start the workers, compile the lexicon in each,
    extract every report, collect. Workers are forked and read the corpus they inherit; where
    fork is not available the chunks are sent to them instead."""
    global _TEXTS
    _TEXTS = texts
    spans = [(i, min(i + chunk, len(texts))) for i in range(0, len(texts), chunk)]
    if "fork" in mp.get_all_start_methods():
        ctx = mp.get_context("fork")
        work, items = _work, spans
    else:
        ctx = mp.get_context()
        work, items = _work_texts, [texts[a:b] for a, b in spans]
    t0 = time.perf_counter()
    with ctx.Pool(processes, initializer=_init_worker) as pool:
        for _ in pool.imap_unordered(work, items):
            pass
    return time.perf_counter() - t0


def _work_texts(chunk: list[str]) -> int:
    assert _WORKER is not None
    return sum(len(_WORKER.extract(text).mentions) for text in chunk)


def scan_share(texts: list[str]) -> float:
    """The share of an uncached extraction spent in the phrase scan alone (the compiled
    regex over each report's scanned text). A faster matching engine (hyperscan, RE2, an
    Aho-Corasick automaton) could at best remove this share; below one half, phrase matching
    is not the ceiling."""
    x = ConceptExtractor(sentence_cache=False)
    t0 = time.perf_counter()
    for text in texts:
        x.extract(text)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    for text in texts:
        for _ in x._finditer(x._scan_text(_lower(text))):
            pass
    return (time.perf_counter() - t0) / full


def time_reference(texts: list[str]) -> float:
    t0 = time.perf_counter()
    for text in texts:
        corpa_reference.extract(text)
    return time.perf_counter() - t0


def binary_accuracy() -> tuple[float, float, int]:
    """Accuracy of ours and of the reference on the frozen set, as the reference sees it
    (each concept positive or not), over the cells that matter: positive in the label or in
    that extractor's answer."""
    import json

    rows = [json.loads(line) for line in FROZEN.read_text("utf-8").splitlines() if line.strip()]
    ours = ConceptExtractor()
    right = {"ours": 0, "ref": 0}
    cells = {"ours": 0, "ref": 0}
    for row in rows:
        got = ours.extract(row["text"]).concepts
        ref = corpa_reference.extract(row["text"])
        for concept, state in row["concepts"].items():
            want = state == "positive"
            for name, said in (("ours", got[concept] == "positive"), ("ref", bool(ref[concept]))):
                if want or said:
                    cells[name] += 1
                    right[name] += said == want
    return right["ours"] / cells["ours"], right["ref"] / cells["ref"], len(rows)


def time_command(texts: list[str], workers: list[int]) -> dict[int, float]:
    """Wall seconds of the whole ``advbench concepts FILE --out OUT --workers N`` command
    (start-up, reading, extraction, writing), in a fresh process each."""
    import json
    import subprocess
    import tempfile

    exe = Path(sys.executable).with_name("advbench")
    out: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "reports.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                f.write(json.dumps({"id": str(i), "text": text}) + "\n")
        for n in workers:
            t0 = time.perf_counter()
            subprocess.run([str(exe), "concepts", str(src), "--out", str(Path(tmp) / "out.jsonl"),
                            "--workers", str(n)], check=True, capture_output=True)
            out[n] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=MIMIC_REPORTS)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reference-reports", type=int, default=10_000,
                    help="subset timed with both the extractor and the CoRPA reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--command-reports", type=int, default=60_000,
                    help="reports for timing the whole `advbench concepts` command")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    texts = corpus(args.reports, args.seed)
    built = time.perf_counter() - t0
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"corpus: {len(texts):,} synthetic MIMIC-like reports, mean {mean_chars:.0f} chars "
          f"(built in {built:.1f} s); cpus: {os.cpu_count()}")

    t0 = time.perf_counter()
    ConceptExtractor()
    compile_s = time.perf_counter() - t0

    results: dict[int, float] = {}
    cpu_one = warm = 0.0
    cached = ConceptExtractor()
    for p in args.processes:
        if p == 1:
            results[1], cpu_one = time_one_process(texts, cached)
            warm, _ = time_one_process(texts, cached)
        else:
            results[p] = time_pool(texts, p)

    subset = texts[: args.reference_reports]
    ours, _ = time_one_process(subset)
    uncached, _ = time_one_process(subset, ConceptExtractor(sentence_cache=False))
    reference = time_reference(subset)

    rows = [("lexicon compile (once per process)", f"{compile_s:.2f} s", "", "")]
    if 1 in results:
        rate = len(texts) / results[1]
        rows.append(("reports/s, 1 process", f"{rate:,.0f}", f">= {TARGET_PER_SECOND:,}",
                     "PASS" if rate >= TARGET_PER_SECOND else "FAIL"))
        rows.append(("reports/s, 1 process, by its CPU time", f"{len(texts) / cpu_one:,.0f}", "",
                     ""))
        rows.append(("seconds for the corpus, 1 process", f"{results[1]:.1f}", "", ""))
        info = cached.cache_info()
        rows.append(("  distinct sentences scanned (the rest from the cache)",
                     f"{info['sentences']:,}", "", ""))
        rows.append(("reports/s, 1 process, second pass (caches warm)",
                     f"{len(texts) / warm:,.0f}", "", ""))
    for p, secs in results.items():
        if p == 1:
            continue
        scaled = secs * MIMIC_REPORTS / len(texts)
        rows.append((f"seconds for the corpus, {p} processes (end to end)", f"{secs:.1f}", "",
                     ""))
        rows.append((f"seconds for {MIMIC_REPORTS:,} reports, {p} processes", f"{scaled:.1f}",
                     f"< {TARGET_ALL_SECONDS:.0f}",
                     "PASS" if scaled < TARGET_ALL_SECONDS else "FAIL"))
        if 1 in results:
            rows.append((f"speed-up, {p} processes vs 1", f"{results[1] / secs:.2f}x", "", ""))
    rows.append((f"reports/s, 1 process, no sentence cache ({len(subset):,} reports)",
                 f"{len(subset) / uncached:,.0f}", "", ""))
    reference_rate = len(subset) / reference
    rows.append(("share of an uncached extraction in the phrase scan (regex engine)",
                 f"{scan_share(subset):.0%}", "", ""))
    rows.append((f"CoRPA reference extractor, reports/s, 1 process ({len(subset):,} reports)",
                 f"{reference_rate:,.0f}", "", ""))
    rows.append(("extractor (1 process) vs reference speed (same subset)",
                 f"{reference / ours:.2f}x", "", ""))

    for workers, secs in time_command(texts[: args.command_reports], args.processes).items():
        rate = args.command_reports / secs
        rows.append((f"`advbench concepts --workers {workers}`, whole command, reports/s "
                     f"({args.command_reports:,})", f"{rate:,.0f}",
                     *((f">= {TARGET_COMMAND:,}", "PASS" if rate >= TARGET_COMMAND else "FAIL")
                       if workers == 2 else ("", ""))))
        ratio = rate / reference_rate
        rows.append((f"`advbench concepts --workers {workers}` vs the CoRPA reference",
                     f"{ratio:.1f}x",
                     *((f">= {TARGET_VS_REFERENCE:.0f}x",
                        "PASS" if ratio >= TARGET_VS_REFERENCE else "FAIL")
                       if workers == 2 else ("", ""))))

    ours_acc, ref_acc, n = binary_accuracy()
    rows.append((f"positive-or-not accuracy, cells that matter, frozen set ({n}), ours",
                 f"{ours_acc:.3f}", "", ""))
    rows.append((f"positive-or-not accuracy, cells that matter, frozen set ({n}), reference",
                 f"{ref_acc:.3f}", "", ""))

    w = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{w}}  {'value':>10}  {'target':>10}  result")
    for name, value, target, verdict in rows:
        print(f"{name:<{w}}  {value:>10}  {target:>10}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

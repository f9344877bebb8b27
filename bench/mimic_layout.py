"""A synthetic folder in the exact MIMIC-CXR-JPG layout, for benchmarking whole builds at scale.

The real data set is credentialed and too large to keep at hand, so ``bench/build_scale.py``
builds this stand-in with the real pipeline instead: gzipped metadata, split and CheXpert CSVs,
one small grayscale PA JPEG per study under ``files/pNN/p<subject>/s<study>/``, and a
``mimic-cxr-reports.zip`` that, like the real one, also holds many other studies' reports.

Only the standard library at the top: build_scale.py imports this module, and the build's
spawned workers import that script again (numpy and Pillow are imported where images are made).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import time
import zipfile
from pathlib import Path

MIMIC_REPORTS = 227_835  # reports in the real mimic-cxr-reports.zip
GENERATOR_VERSION = 1  # bump when the generated folder changes: cached folders are remade
MARKER = "BENCH_DATASET.json"

# (sentence, its CheXpert label, the impression it gives or None)
FINDINGS = [
    ("There is a {size} {side} pleural effusion.", "Pleural Effusion",
     "{Size} {side} pleural effusion."),
    ("{Size} bilateral pleural effusions with adjacent bibasilar atelectasis.",
     "Pleural Effusion", "Bilateral pleural effusions."),
    ("Blunting of the {side} costophrenic angle may reflect a small effusion.",
     "Pleural Effusion", None),
    ("Focal consolidation in the {side} lower lobe is concerning for pneumonia.", "Pneumonia",
     "{Side} lower lobe pneumonia."),
    ("{Desc} opacity at the {side} lung base may reflect atelectasis, though infection cannot "
     "be excluded.", "Lung Opacity", "Possible early pneumonia at the {side} base."),
    ("{Side} upper lobe consolidative opacity with air bronchograms.", "Consolidation", None),
    ("The heart is {grade} enlarged.", "Cardiomegaly", "{Grade} cardiomegaly."),
    ("{Grade} cardiomegaly is {change}.", "Cardiomegaly", None),
    ("A {cm} cm nodule projects over the {side} upper lobe.", "Lung Lesion",
     "{Side} upper lobe nodule; CT is recommended."),
    ("There is a {cm} cm mass in the {side} upper lobe, concerning for malignancy.",
     "Lung Lesion", "{Side} upper lobe mass, concerning for malignancy."),
    ("There is a {size} {side} apical pneumothorax.", "Pneumothorax",
     "{Size} {side} pneumothorax."),
    ("Mild pulmonary vascular congestion and interstitial edema.", "Edema",
     "Mild pulmonary edema."),
    ("Bibasilar atelectasis is {change}.", "Atelectasis", None),
    ("Endotracheal tube terminates {cm} cm above the carina.", "Support Devices",
     "Lines and tubes in appropriate position."),
    ("{Side} internal jugular central venous catheter terminates in the mid SVC.",
     "Support Devices", None),
    ("Old healed {side} rib fractures.", "Fracture", None),
]
NORMAL = [
    ("The lungs are clear.", None),
    ("No pleural effusion or pneumothorax.", "Pleural Effusion"),
    ("Heart size is normal.", "Cardiomegaly"),
    ("The cardiomediastinal silhouette is within normal limits.", "Cardiomegaly"),
    ("No focal consolidation.", "Consolidation"),
    ("Hilar contours are unremarkable.", None),
    ("The osseous structures are intact.", None),
]
INDICATIONS = ["cough, eval for pneumonia", "shortness of breath", "chest pain",
               "fever and leukocytosis", "follow-up of effusion", "preop evaluation",
               "hypoxia", "line placement"]
COMPARISONS = ["None.", "___.", "Chest radiograph from ___.", "Prior study of ___."]
SIDES = ["right", "left"]
SIZES = ["small", "moderate", "large", "trace", "small-to-moderate"]
DESCS = ["patchy", "hazy", "streaky", "ill-defined", "subtle"]
GRADES = ["mildly", "moderately", "markedly"]
CHANGES = ["unchanged", "stable", "slightly increased", "improved", "new"]


def wrap_report(text: str, width: int = 77) -> str:
    """Hard line wraps like the MIMIC-CXR reports (a leading space on every line)."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(" " + x for x in lines)


def make_report(rng: random.Random) -> tuple[str, dict[str, str]]:
    """A short MIMIC-style report and the CheXpert labels that go with it."""
    side, size = rng.choice(SIDES), rng.choice(SIZES)
    grade = rng.choice(GRADES)
    fills = {"side": side, "Side": side.capitalize(), "size": size, "Size": size.capitalize(),
             "Desc": rng.choice(DESCS).capitalize(), "grade": grade, "Grade": grade.capitalize(),
             "change": rng.choice(CHANGES), "cm": rng.choice(["0.8", "1.2", "2.5", "3", "4.5"])}
    labels: dict[str, str] = {}
    found = rng.sample(FINDINGS, rng.choice([1, 1, 2, 2, 3])) if rng.random() > 0.35 else []
    sentences, impressions = [], []
    for text, label, impression in found:
        sentences.append(text.format(**fills))
        labels[label] = "1.0"
        if impression:
            impressions.append(impression.format(**fills))
    for text, label in rng.sample(NORMAL, rng.choice([1, 2, 3])):
        if label is None or label not in labels:
            sentences.append(text)
            if label:
                labels[label] = "0.0"
    if not found:
        labels["No Finding"] = "1.0"
    impressions = impressions or ["No acute cardiopulmonary process."]
    indication = f"___-year-old {rng.choice(['man', 'woman'])} with {rng.choice(INDICATIONS)}."
    technique = "Chest PA and lateral"
    body = final_report(indication, technique, rng.choice(COMPARISONS), "  ".join(sentences),
                        impressions)
    return "\n".join(body) + "\n", labels


def final_report(indication: str, technique: str, comparison: str, findings: str,
                 impressions: list[str]) -> list[str]:
    """The lines of a MIMIC-CXR final report: headed sections, hard-wrapped text, impressions
    numbered when there are several."""
    parts = [
        " " * 33 + "FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        "",
        f" INDICATION:  {indication}",
        "",
        f" TECHNIQUE:  {technique}",
        "",
        f" COMPARISON:  {comparison}",
        "",
        " FINDINGS:",
        "",
        wrap_report(findings),
        "",
        " IMPRESSION:",
        "",
    ]
    if len(impressions) > 1:
        parts += [wrap_report(f"{i}.  {s}") for i, s in enumerate(impressions, 1)]
    else:
        parts.append(wrap_report(impressions[0]))
    return parts


def make_jpegs(count: int, size: int, seed: int) -> list[bytes]:
    """A few distinct grayscale chest-like JPEGs; the folder reuses their bytes."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(count):
        body = 170 - 60 * ((xx - 0.5) ** 2 * 4)
        for cx in (0.32, 0.68):  # two darker lung fields
            lung = ((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.33) ** 2 < 1
            body = np.where(lung, body - 90 + rng.uniform(-10, 10), body)
        pixels = np.clip(body + rng.normal(0, 12, body.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _ids(i: int) -> tuple[str, str, str]:
    """(subject, study, dicom) of the i-th study: 8-digit MIMIC-like ids, spread over p10-p18,
    about three studies per subject, dicom ids shaped like MIMIC's."""
    subject = str(10_000_000 + (i // 3) * 119)
    study = str(50_000_000 + i * 43)
    digest = hashlib.sha1(study.encode()).hexdigest()
    dicom = "-".join(digest[k : k + 8] for k in range(0, 40, 8))
    return subject, study, dicom


def _split(j: int) -> str:
    r = j % 50
    return "validate" if r < 2 else "test" if r < 5 else "train"  # 90% / 4% / 6%


def _csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    import csv

    with gzip.open(path, "wt", newline="", compresslevel=6) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_mimic_folder(root: Path, studies: int, extra: int, seed: int,
                       chexpert_all: bool = True, image_size: int = 128) -> None:
    """N studies with one PA image each; the reports zip holds ``extra`` other studies too,
    interleaved as in the real data, and so does the CheXpert CSV with ``chexpert_all``."""
    # the column lists of advbench's own layout writer (imported here: heavy, see the top)
    from advbench.phantoms.layout import METADATA_COLUMNS as META_COLUMNS
    from advbench.sources.base import CHEXPERT_COLUMNS as CHEXPERT

    rng = random.Random(seed)
    jpegs = make_jpegs(8, image_size, seed)
    total = studies + extra
    mine = {round(j * total / studies) for j in range(studies)}
    meta, split, labels, members = [], [], [], []
    pool = [make_report(rng) for _ in range(min(extra, 4096))]  # the other studies' reports
    j = 0
    for i in range(total):
        subject, study, dicom = _ids(i)
        if i in mine:
            text, lab = make_report(rng)
            folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{dicom}.jpg").write_bytes(jpegs[j % len(jpegs)])
            meta.append([dicom, subject, study, "CHEST (PA AND LAT)", "PA", str(image_size),
                         str(image_size),
                         f"21{j % 90 + 10:02d}0506", "213014.531", "Chest 2 Views",
                         "postero-anterior", "Erect"])
            split.append([dicom, study, subject, _split(j)])
            j += 1
        else:
            text, lab = pool[i % len(pool)]
        if chexpert_all or i in mine:
            labels.append([subject, study, *(lab.get(c, "") for c in CHEXPERT)])
        members.append((f"mimic-cxr-reports/files/p{subject[:2]}/p{subject}/s{study}.txt", text))
    _csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", META_COLUMNS, meta)
    _csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz",
            ["dicom_id", "study_id", "subject_id", "split"], split)
    labels.sort()
    _csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CHEXPERT],
            labels)
    members.sort()
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED,
                         compresslevel=6) as z:
        for name, text in members:
            z.writestr(name, text)


def ensure_dataset(root: Path, studies: int, extra: int, seed: int,
                   chexpert_all: bool = True, image_size: int = 128) -> tuple[float, bool]:
    """Write the folder unless one with the same parameters is there: (seconds, reused)."""
    params = {"generator": GENERATOR_VERSION, "studies": studies, "extra_reports": extra,
              "seed": seed, "chexpert_all": chexpert_all, "image_size": image_size}
    marker = root / MARKER
    try:
        if json.loads(marker.read_text()) == params:
            return 0.0, True
    except (OSError, ValueError):
        pass
    t0 = time.perf_counter()
    tmp = root.with_name(root.name + ".tmp")
    for path in (tmp, root):
        if path.exists():
            shutil.rmtree(path)
    tmp.mkdir(parents=True)
    write_mimic_folder(tmp, studies, extra, seed, chexpert_all, image_size)
    (tmp / MARKER).write_text(json.dumps(params))
    tmp.rename(root)
    return time.perf_counter() - t0, False

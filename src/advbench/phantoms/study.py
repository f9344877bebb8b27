"""One phantom study: ids, split, scene, report, labels and images, as a pure function of
(index, seed), so any process can make any study without coordination."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from advbench.phantoms.rendering import render, render_lateral
from advbench.phantoms.report import PhantomReport, chexpert_labels, write_report
from advbench.phantoms.scene import Scene, sample_scene

# Multipliers coprime with 10**7 make index -> id a permutation: ids never collide.
_SUBJECT_STEP = 7_654_321
_STUDY_STEP = 3_214_567


def _hash(*parts: object) -> bytes:
    text = ":".join(str(p) for p in ("advbench-phantom", *parts))
    return hashlib.sha256(text.encode()).digest()


def _hash_int(*parts: object) -> int:
    return int.from_bytes(_hash(*parts)[:8], "big")


def _dicom_id(seed: int, index: int, view: str) -> str:
    """MIMIC-like ``xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx`` (40 hex digits)."""
    h = _hash(seed, index, view, "dicom").hex()[:40]
    return "-".join(h[i:i + 8] for i in range(0, 40, 8))


def study_ids(index: int, *, seed: int) -> dict[str, str]:
    """Subject, study and image ids of study ``index``: unique per index for a seed."""
    if index < 0 or index >= 10**7:
        raise ValueError(f"study index must be in [0, 10**7), not {index}")
    subject = 10_000_000 + (index * _SUBJECT_STEP + _hash_int(seed, "subject")) % 10**7
    study = 50_000_000 + (index * _STUDY_STEP + _hash_int(seed, "study")) % 10**7
    return {"subject_id": str(subject), "study_id": str(study),
            "dicom_id": _dicom_id(seed, index, "PA"),
            "lateral_dicom_id": _dicom_id(seed, index, "LATERAL")}


def study_split(index: int, *, seed: int) -> str:
    """``train`` / ``validate`` / ``test`` (about 80/10/10), fixed per (index, seed)."""
    r = _hash_int(seed, index, "split") % 100
    return "train" if r < 80 else ("validate" if r < 90 else "test")


def _date_time(seed: int, index: int) -> tuple[str, str]:
    """Shifted MIMIC-style date (21YYMMDD) and time (HHMMSS.fff)."""
    h = _hash_int(seed, index, "when")
    year, month, day = 2100 + h % 100, 1 + (h >> 8) % 12, 1 + (h >> 16) % 28
    hh, mm, ss, ms = (h >> 24) % 24, (h >> 32) % 60, (h >> 40) % 60, (h >> 48) % 1000
    return f"{year:04d}{month:02d}{day:02d}", f"{hh:02d}{mm:02d}{ss:02d}.{ms:03d}"


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class PhantomStudy:
    """A generated study; ``image`` is the PA view (uint8, size × size)."""

    index: int
    seed: int
    subject_id: str
    study_id: str
    dicom_id: str
    lateral_dicom_id: str
    split: str
    study_date: str
    study_time: str
    scene: Scene
    report: PhantomReport
    chexpert: dict[str, float | None]
    image: np.ndarray = field(repr=False)
    view_position: str = "PA"

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def jpeg_bytes(self, quality: int = 95) -> bytes:
        return encode_jpeg(self.image, quality)

    def lateral_image(self) -> np.ndarray:
        """A plain lateral view of the same patient (the ingest skips it by default)."""
        return render_lateral(self.scene, self.size)

    def scene_record(self) -> dict:
        """The scene JSON kept beside the PA image: the scene plus the report's concepts."""
        data = self.scene.to_dict()
        data["report_concepts"] = dict(self.report.concepts)
        return data

    @property
    def relative_dir(self) -> str:
        """``files/pNN/p<subject>/s<study>``, as in MIMIC-CXR-JPG."""
        s = self.subject_id
        return f"files/p{s[:2]}/p{s}/s{self.study_id}"


def generate_study(index: int, *, seed: int, size: int = 512) -> PhantomStudy:
    """Study ``index`` of the phantom set ``seed``; the same arguments give the same study."""
    ids = study_ids(index, seed=seed)
    scene = sample_scene(np.random.default_rng([seed, index, 0]))
    report = write_report(scene, np.random.default_rng([seed, index, 1]))
    date, time = _date_time(seed, index)
    return PhantomStudy(
        index=index,
        seed=seed,
        subject_id=ids["subject_id"],
        study_id=ids["study_id"],
        dicom_id=ids["dicom_id"],
        lateral_dicom_id=ids["lateral_dicom_id"],
        split=study_split(index, seed=seed),
        study_date=date,
        study_time=time,
        scene=scene,
        report=report,
        chexpert=chexpert_labels(scene, report.concepts, report.labels),
        image=render(scene, size),
    )

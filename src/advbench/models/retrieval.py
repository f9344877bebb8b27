"""VLM victims built on an open_clip encoder: they answer with the nearest neighbour.

- ``open-clip``: zero-shot; the candidate findings text (per image, given by the caller: true,
  target and distractor findings) whose text embedding is closest (cosine) to the image's.
  Cheap and local, and not one of the attack's surrogates when its weights differ.
- ``retrieval``: the demo's report generator; it answers with the findings of the most similar
  gallery image. Such generators are a classic baseline for report generation and need no GPU
  or served model, so the MedFocusLeak demo has a victim that runs anywhere; a background
  perturbation that moves the embedding towards the target findings' neighbourhood misleads it
  exactly as it misleads a VLM's vision tower.

Encoders load from local files only (a weights file or ``local-dir:``, plus an optional model
config JSON: the fields of the CoRPA ``clip`` image check); nothing is downloaded.

A gallery is either
- a JSONL file of ``{"image": path, "findings": text}`` (paths relative to the file), embedded
  at load and cached under the advbench cache, keyed by the file, its images and the encoder;
- or a folder written by ``build_gallery``: ``embeddings.npy`` (N×D float32, unit rows),
  ``findings.jsonl`` and ``gallery.json``, which records the encoder's identity (model name and
  weights digest). Embeddings only mean something to the encoder that made them, so loading a
  folder with another encoder fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from advbench.models.clip import load_open_clip
from advbench.models.victims import pick_device
from advbench.models.vlm import (
    VLM_VICTIMS,
    Answer,
    VlmConfig,
    VlmVictim,
    _check_lengths,
    to_pil,
)

__all__ = ["Gallery", "OpenClipEncoder", "OpenClipEncoderSpec", "OpenClipVlm",
           "OpenClipVlmConfig", "RetrievalConfig", "RetrievalVlm", "build_gallery",
           "encoder_identity", "load_gallery"]

# -- the encoder --------------------------------------------------------------------------

class OpenClipEncoderSpec(BaseModel):
    """An open_clip model from local files (the fields of the CoRPA ``clip`` image check)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = Field(description="An open_clip model name, e.g. ViT-B-16.")
    pretrained: str = Field(description="A local weights file (.bin/.safetensors) or "
                            "local-dir:/folder; nothing is downloaded.")
    model_config_file: Path | None = Field(
        default=None, description="An open_clip model config (JSON) for an architecture "
        "open_clip does not ship; its file name (stem) is the model name.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=32, ge=1)

    def encoder_spec(self) -> OpenClipEncoderSpec:
        """Just the encoder fields (a subclass config carries more)."""
        return OpenClipEncoderSpec(**{k: getattr(self, k)
                                      for k in OpenClipEncoderSpec.model_fields})


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """sha256 of a file, computed once per process and file version."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def encoder_identity(spec: OpenClipEncoderSpec) -> dict[str, str | None]:
    """What the embeddings of an encoder depend on: its name and the bytes of its weights and
    config (not their paths: a copied file is the same encoder; not the device)."""
    pretrained = spec.pretrained
    if pretrained.startswith("local-dir:"):
        folder = Path(pretrained[len("local-dir:"):])
        if not folder.is_dir():
            raise FileNotFoundError(f"open_clip folder not found: {folder}")
        h = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(f.relative_to(folder).as_posix().encode() + b"\0" +
                     _file_digest(f).encode())
        weights = h.hexdigest()
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"open_clip weights not found: {pretrained}")
        weights = _file_digest(path)
    config = _file_digest(spec.model_config_file) if spec.model_config_file else None
    return {"model": spec.model, "weights_sha256": weights, "config_sha256": config}


class OpenClipEncoder:
    """An open_clip model loaded from local files, embedding images and texts (L2-normalised,
    float32 numpy)."""

    def __init__(self, spec: OpenClipEncoderSpec):
        self.identity = encoder_identity(spec)  # also checks that the files exist
        self.spec = spec
        self.device = pick_device(spec.device)
        self.model, self.preprocess, self.tokenizer = load_open_clip(
            spec.model, spec.pretrained, spec.model_config_file, self.device)

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        step = self.spec.batch_size
        with torch.no_grad():
            for start in range(0, len(images), step):
                x = torch.stack([self.preprocess(to_pil(im))
                                 for im in images[start:start + step]]).to(self.device)
                out.append(self._unit(self.model.encode_image(x)))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        step = self.spec.batch_size
        with torch.no_grad():
            for start in range(0, len(texts), step):
                tokens = self.tokenizer(list(texts[start:start + step])).to(self.device)
                out.append(self._unit(self.model.encode_text(tokens)))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    @staticmethod
    def _unit(x: Any) -> np.ndarray:
        x = x.float()
        return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


class OpenClipVlmConfig(VlmConfig, OpenClipEncoderSpec):
    kind: Literal["open-clip"] = "open-clip"
    candidate_template: str = Field(
        default="{findings}", description="Text embedded for each candidate; {findings} is "
        "the candidate (e.g. 'a chest radiograph showing {findings}').")


@VLM_VICTIMS.register("open-clip")
class OpenClipVlm(VlmVictim):
    """Zero-shot: the candidate whose text embedding is closest (cosine) to the image's.
    Prompts are not read; without candidates it cannot answer."""

    kind = "open-clip"
    Config = OpenClipVlmConfig

    def __init__(self, config: OpenClipVlmConfig):
        super().__init__(config)
        self.encoder = OpenClipEncoder(config.encoder_spec())

    def respond(self, images, prompts, *, candidates=None):
        _check_lengths(images, prompts, candidates)
        if candidates is None:
            raise ValueError(f"victim {self.name!r} (open-clip) answers by choosing among "
                             "candidate findings: pass candidates=[[...], ...], one list per "
                             "image")
        for i, cands in enumerate(candidates):
            if not cands:
                raise ValueError(f"image {i} has an empty candidate list")
        if not images:
            return []
        texts = sorted({c for cands in candidates for c in cands})
        template = self.config.candidate_template
        text_emb = self.encoder.encode_texts([template.replace("{findings}", t) for t in texts])
        row = {t: i for i, t in enumerate(texts)}
        image_emb = self.encoder.encode_images(images)
        out = []
        for emb, cands in zip(image_emb, candidates, strict=True):
            sims = text_emb[[row[c] for c in cands]] @ emb
            out.append(Answer(cands[int(np.argmax(sims))]))
        return out



# -- retrieval ----------------------------------------------------------------------------

GALLERY_FORMAT = 1


class RetrievalConfig(VlmConfig, OpenClipEncoderSpec):
    kind: Literal["retrieval"] = "retrieval"
    gallery: Path = Field(description="A JSONL of {image, findings} or a build_gallery folder.")


class Gallery:
    """Unit embeddings (N×D) and the findings text of each row."""

    def __init__(self, embeddings: np.ndarray, findings: list[str]):
        if len(embeddings) != len(findings) or not findings:
            raise ValueError(f"a gallery needs one findings text per embedding and at least "
                             f"one row; got {len(embeddings)} embeddings, {len(findings)} texts")
        self.embeddings = np.asarray(embeddings, np.float32)
        self.findings = findings

    def nearest(self, queries: np.ndarray) -> np.ndarray:
        """Row index of the most similar gallery entry per (unit) query."""
        return np.argmax(queries @ self.embeddings.T, axis=1)


def _key(identity: dict[str, str | None]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _write(encoder: OpenClipEncoder, items: Sequence[tuple[np.ndarray, str]], out: Path,
           extra: dict[str, str] | None = None, *, replace: bool = True) -> Path:
    if not items:
        raise ValueError("a gallery needs at least one (image, findings) item")
    embeddings = encoder.encode_images([im for im, _ in items]).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        np.save(tmp / "embeddings.npy", embeddings)
        with (tmp / "findings.jsonl").open("w", encoding="utf-8") as f:
            for _, text in items:
                f.write(json.dumps({"findings": text}, ensure_ascii=False) + "\n")
        meta = {"format": GALLERY_FORMAT, "encoder": encoder.identity,
                "encoder_key": _key(encoder.identity), "count": len(items),
                "dim": int(embeddings.shape[1]), **(extra or {})}
        (tmp / "gallery.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists() and replace:
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)  # readers never see a half-written folder
        except OSError:
            if replace or not (out / "gallery.json").is_file():
                raise  # else another worker cached the same gallery first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_gallery(encoder_spec: OpenClipEncoderSpec, items: Sequence[tuple[np.ndarray, str]],
                  out: Path) -> Path:
    """Embed ``items`` (image, findings) with the encoder and write a gallery folder at
    ``out`` (replaced if present); returns ``out``."""
    return _write(OpenClipEncoder(encoder_spec.encoder_spec()), items, Path(out))


def _read_folder(folder: Path, encoder: OpenClipEncoder) -> Gallery:
    meta_file = folder / "gallery.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder} is not a gallery folder (no gallery.json); write "
                                "one with build_gallery or give a JSONL file")
    meta = json.loads(meta_file.read_text())
    if meta.get("encoder_key") != _key(encoder.identity):
        raise ValueError(f"gallery {folder} was embedded by {meta.get('encoder')}, not by this "
                         f"victim's encoder {encoder.identity}: rebuild it with build_gallery")
    embeddings = np.load(folder / "embeddings.npy")
    with (folder / "findings.jsonl").open(encoding="utf-8") as f:
        findings = [json.loads(line)["findings"] for line in f if line.strip()]
    return Gallery(embeddings, findings)


def _read_jsonl(path: Path) -> list[tuple[Path, str]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("image"), str) or \
                    not isinstance(row.get("findings"), str):
                raise ValueError(f"{path}:{n}: a gallery line needs string 'image' and "
                                 "'findings'")
            image = Path(row["image"])
            rows.append((image if image.is_absolute() else path.parent / image, row["findings"]))
    return rows


def load_gallery(path: Path, encoder: OpenClipEncoder) -> Gallery:
    """The gallery at ``path`` for ``encoder`` (a folder, or a JSONL embedded once and cached)."""
    from advbench.images import decode_pixels
    from advbench.paths import cache_dir

    path = Path(path)
    if path.is_dir():
        return _read_folder(path, encoder)
    if not path.is_file():
        raise FileNotFoundError(f"gallery not found: {path}")
    rows = _read_jsonl(path)
    h = hashlib.sha256(path.read_bytes())
    for image, _ in rows:
        if not image.is_file():
            raise FileNotFoundError(f"{path}: gallery image not found: {image}")
        st = image.stat()
        h.update(f"{image.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(_key(encoder.identity).encode())
    folder = cache_dir() / "galleries" / h.hexdigest()[:24]
    if not (folder / "gallery.json").is_file():
        _write(encoder, [(decode_pixels(im.read_bytes()), text) for im, text in rows], folder,
               {"source": str(path.resolve())}, replace=False)
    return _read_folder(folder, encoder)


@VLM_VICTIMS.register("retrieval")
class RetrievalVlm(VlmVictim):
    """Answers with the findings of the nearest gallery image; prompts and candidates are not
    read."""

    kind = "retrieval"
    Config = RetrievalConfig

    def __init__(self, config: RetrievalConfig):
        super().__init__(config)
        self.encoder = OpenClipEncoder(config.encoder_spec())
        self.gallery = load_gallery(config.gallery, self.encoder)

    def respond(self, images, prompts, *, candidates=None):
        _check_lengths(images, prompts, candidates)
        if not images:
            return []
        rows = self.gallery.nearest(self.encoder.encode_images(images))
        return [Answer(self.gallery.findings[int(i)]) for i in rows]

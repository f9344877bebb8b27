"""The YAML build config, validated by a typed model.

Errors name the file, the key path and the problem, e.g.
``demo.yaml: sources[0].views: at least one view is needed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from advbench.attacks import identity  # noqa: F401  (registers it)
from advbench.attacks.base import ATTACKS
from advbench.attacks.corpa import attack as corpa_attack  # noqa: F401  (registers it)
from advbench.attacks.medfocusleak import attack as mfl_attack  # noqa: F401  (registers it)
from advbench.sources import (  # noqa: F401  (registers them)
    dicom,
    hf_dataset,
    image_folder,
    mimic_cxr_jpg,
    phantom_cxr,
)
from advbench.sources.base import SOURCES
from advbench.workers import RUNNERS, default_workers

SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"

SourceSpec = SOURCES.config_spec()
AttackSpec = ATTACKS.config_spec()


class BuildConfig(BaseModel):
    """One release build: what to read, where to write, and how to cut it into shards."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Dataset name (a slug).")
    version: str = Field(pattern=SEMVER, description="Release version, semver (e.g. 1.0.0).")
    seed: int = Field(default=0, ge=0, description="Seed for every random choice of the build.")
    output: Path = Field(description="Releases go to <output>/<name>/<version>/.")
    description: str = Field(default="", description="One paragraph for the dataset card.")
    shard_size: int = Field(default=500, gt=0, le=100_000, description="Studies per shard.")
    row_group_size: int = Field(
        default=100, gt=0,
        description="Studies per batch: one Parquet row group, and what an attack gets at once.",
    )
    sources: list[SourceSpec] = Field(min_length=1, description="Input data sources.")
    attacks: list[AttackSpec] = Field(
        default_factory=list,
        description="Derived configs made from the accepted studies (one release config each).",
    )
    workers: int | None = Field(
        default=None, gt=0, le=1024,
        description="Shards processed at once; default: the number of cores.",
    )
    runner: Literal[tuple(RUNNERS.names())] = Field(  # type: ignore[valid-type]
        default="processes",
        description=f"Where shard work runs: {', '.join(RUNNERS.names())}.",
    )

    # Where the config file lives: relative paths in it are resolved from there.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _check(self) -> BuildConfig:
        seen = {"clean"}
        for i, attack in enumerate(self.attacks):
            name = attack.config_name()
            if name in seen:
                raise ValueError(f"attacks[{i}]: release config {name!r} is already taken; "
                                 "give this entry another `name`")
            seen.add(name)
        return self

    def worker_count(self) -> int:
        return self.workers or default_workers()

    def output_dir(self) -> Path:
        out = self.output.expanduser()
        return out if out.is_absolute() else self.base_dir / out

    def release_dir(self) -> Path:
        return self.output_dir() / self.name / self.version

    def to_json(self) -> dict[str, Any]:
        """The config as written into the manifest (paths as strings)."""
        return json.loads(self.model_dump_json(exclude={"base_dir"}))


class ConfigError(Exception):
    """A config that cannot be used; the message names the file, key and problem."""


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in SOURCES.names() or str(part) in ATTACKS.names():
            continue  # discriminator tag: not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_PATTERN_HINTS = {
    "version": "must be a semantic version such as 1.0.0",
    "name": "must be a lower-case slug (letters, digits, '.', '_', '-')",
}


def format_validation_error(where: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"]
        what, registry = ("attack", ATTACKS) if err["loc"][:1] == ("attacks",) else (
            "source", SOURCES)
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown {what} kind; known: {', '.join(registry.names())}"
        elif err["type"] == "union_tag_not_found":
            msg = f"missing `kind`; known: {', '.join(registry.names())}"
        elif err["type"] == "value_error" and not err["loc"]:
            msg = msg.removeprefix("Value error, ")
            lines.append(f"{where}: {msg}")
            continue
        elif err["type"] == "string_pattern_mismatch":
            msg = _PATTERN_HINTS.get(str(err["loc"][-1]), msg)
        if err["type"] != "missing" and not isinstance(err.get("input"), dict | list):
            msg += f" (got {err.get('input')!r})"
        lines.append(f"{where}: {_key_path(tuple(err['loc']))}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, *, where: str = "<config>", base_dir: Path = Path(".")) -> BuildConfig:
    """Validate an already-loaded mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the config must be a mapping of keys to values")
    try:
        return BuildConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(where, exc)) from None


def load_config(path: Path | str) -> BuildConfig:
    """Read and validate a YAML build config."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    if "base_dir" in (data or {}):
        raise ConfigError(f"{path}: base_dir: unknown key")
    return parse_config(data, where=str(path), base_dir=path.resolve().parent)


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the build config, as written to ``schemas/build-config.schema.json``."""
    schema = BuildConfig.model_json_schema(mode="validation")
    schema["properties"].pop("base_dir", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "advbench build config"
    return schema

"""The build config: valid files load, bad ones fail naming file, key and problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from advbench.config import BuildConfig, ConfigError, load_config, parse_config
from advbench.schemas import all_schemas

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "build.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _valid(**over) -> dict:
    data = {
        "name": "my-bench",
        "version": "1.2.0",
        "seed": 7,
        "output": "releases",
        "sources": [{"kind": "mimic-cxr-jpg", "root": "mimic", "views": ["pa", "AP"]}],
    }
    data.update(over)
    return data


def test_valid_config_loads_and_resolves_paths_from_its_folder(tmp_path):
    cfg = load_config(_write(tmp_path, _valid()))
    assert isinstance(cfg, BuildConfig)
    assert cfg.release_dir() == tmp_path / "releases" / "my-bench" / "1.2.0"
    assert cfg.sources[0].views == ["PA", "AP"]
    assert cfg.sources[0].one_image_per_study is True
    assert "base_dir" not in cfg.to_json()


def test_phantom_source_config(tmp_path):
    cfg = load_config(_write(tmp_path, _valid(sources=[{"kind": "phantom-cxr", "studies": 5}])))
    assert cfg.sources[0].studies == 5 and cfg.sources[0].size == 512


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "blue"}, "colour: unknown key"),
        ({"version": "1.0"}, "version: must be a semantic version"),
        ({"name": "My Bench"}, "name: must be a lower-case slug"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"sources": []}, "sources: List should have at least 1 item"),
        ({"sources": [{"kind": "dicom-folder", "root": "x"}]}, "sources[0]: unknown source kind"),
        ({"sources": [{"root": "x"}]}, "sources[0]: missing `kind`"),
        ({"sources": [{"kind": "mimic-cxr-jpg", "root": "x", "view": ["PA"]}]},
         "sources[0].view: unknown key"),
        ({"sources": [{"kind": "mimic-cxr-jpg", "root": "x", "views": []}]},
         "sources[0].views: Value error, at least one view is needed"),
        ({"sources": [{"kind": "mimic-cxr-jpg", "root": "x", "splits": ["dev"]}]},
         "sources[0].splits: Value error, unknown split 'dev'"),
        ({"sources": [{"kind": "mimic-cxr-jpg", "root": "x", "limit": 0}]},
         "sources[0].limit: Input should be greater than 0"),
        ({"sources": [{"kind": "phantom-cxr", "studies": "many"}]},
         "sources[0].studies: Input should be a valid integer"),
    ],
)
def test_bad_values_name_file_key_and_problem(tmp_path, change, expected):
    path = _write(tmp_path, _valid(**change))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: {expected}" in str(err.value)


def test_missing_required_keys_are_listed(tmp_path):
    path = _write(tmp_path, {"name": "x", "sources": [{"kind": "mimic-cxr-jpg"}]})
    message = str(pytest.raises(ConfigError, load_config, path).value)
    for key in ("version: Field required", "output: Field required",
                "sources[0].root: Field required"):
        assert f"{path}: {key}" in message


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = _write(tmp_path, "name: x\nversion: [1.0\nseed: 1\n")
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert message.startswith(f"{path}: invalid YAML at line 3")


def test_missing_file_and_non_mapping(tmp_path):
    assert "config file not found" in str(
        pytest.raises(ConfigError, load_config, tmp_path / "nope.yaml").value)
    assert "must be a mapping" in str(
        pytest.raises(ConfigError, load_config, _write(tmp_path, "- a\n- b\n")).value)
    with pytest.raises(ConfigError, match="base_dir: unknown key"):
        load_config(_write(tmp_path, _valid(base_dir="/")))


def test_parse_config_names_where():
    with pytest.raises(ConfigError, match=r"^inline: version"):
        parse_config(_valid(version="x"), where="inline")


def test_schema_files_are_up_to_date():
    """`make schemas` (advbench schema) must be re-run when the models change."""
    for name, schema in all_schemas().items():
        path = REPO / "schemas" / name
        assert path.is_file(), f"{path} missing: run `advbench schema`"
        assert json.loads(path.read_text()) == json.loads(json.dumps(schema)), name


def test_config_schema_lists_every_source_kind():
    schema = all_schemas()["build-config.schema.json"]
    text = json.dumps(schema)
    assert '"mimic-cxr-jpg"' in text and '"phantom-cxr"' in text
    assert "base_dir" not in schema["properties"]

"""The command line: help lists working commands, errors exit non-zero with clear messages."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from advbench.cli import app
from advbench.schemas import ConceptsLine
from tests.conftest import write_config

runner = CliRunner()


def test_help_lists_commands_without_heavy_imports():
    code = (
        "import sys\n"
        "from advbench.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'great_expectations', 'prefect', 'datasets',"
        " 'pandas', 'pyarrow') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for command in ("build", "demo", "phantoms", "concepts", "schema"):
        assert command in out.stdout
    assert "HEAVY []" in out.stdout


def test_concepts_command_imports_no_heavy_library(tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "FINDINGS: Small left pleural effusion."}) + "\n")
    code = (
        "import sys\nfrom advbench.cli import app\n"
        f"try:\n    app(['concepts', {str(src)!r}])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('torch', 'diffusers', 'great_expectations', 'prefect',"
        " 'datasets', 'pyarrow') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    line = json.loads(out.stdout.splitlines()[0])
    assert line["concepts"]["effusion"] == "positive"


def test_concepts_to_stdout_and_file(tmp_path):
    src = tmp_path / "reports.jsonl"
    src.write_text(
        json.dumps({"id": "r1", "text": "IMPRESSION: No acute cardiopulmonary process."}) + "\n"
        + json.dumps({"id": "r2", "text": "FINDINGS: Possible right lower lobe pneumonia."})
        + "\n"
    )
    result = runner.invoke(app, ["concepts", str(src)])
    assert result.exit_code == 0, result.output
    lines = [ConceptsLine.model_validate_json(x) for x in result.stdout.splitlines()]
    assert [x.id for x in lines] == ["r1", "r2"]
    assert lines[0].concepts.unremarkable == "positive"
    assert lines[1].concepts.pneumonitis == "uncertain"

    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["concepts", str(src), "--out", str(out)])
    assert result.exit_code == 0
    assert len(out.read_text().splitlines()) == 2


def test_concepts_bad_input_exits_2_naming_it(tmp_path):
    result = runner.invoke(app, ["concepts", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2
    assert "missing.jsonl" in result.output


def test_build_config_error_exits_2(tmp_path, mimic_root):
    path = write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out", colour="red")
    result = runner.invoke(app, ["build", str(path), "--no-prefect"])
    assert result.exit_code == 2
    assert f"{path}: sources[0].colour: unknown key" in result.output


def test_build_prints_counts_and_fails_when_nothing_accepted(tmp_path, mimic_root):
    path = write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out")
    result = runner.invoke(app, ["build", str(path), "--no-prefect"])
    assert result.exit_code == 0, result.output
    assert "inputs 11: accepted 4, rejected 7, failed 0" in result.output
    assert "missing_report" in result.output

    result = runner.invoke(app, ["build", str(path), "--no-prefect"])
    assert result.exit_code == 1 and "already exists" in result.output

    path = write_config(tmp_path / "c.yaml", mimic_root, tmp_path / "out2", views=["LL"])
    result = runner.invoke(app, ["build", str(path), "--no-prefect"])
    assert result.exit_code == 1
    assert "nothing was accepted from 11 inputs" in result.output


def test_schema_command_writes_files(tmp_path):
    result = runner.invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "build-config.schema.json", "concepts-output.schema.json"]


def test_phantoms_rejects_bad_reports_option(tmp_path):
    result = runner.invoke(app, ["phantoms", "--out", str(tmp_path), "--reports", "pdf"])
    assert result.exit_code == 2 and "--reports" in result.output

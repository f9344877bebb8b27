"""Report inputs of ``advbench concepts``: JSONL, one .txt, a MIMIC folder, a MIMIC zip."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from advbench.concepts.inputs import ReportInputError, iter_report_inputs

REPORTS = {
    ("10000032", "50414267"): " FINDINGS:  No pneumothorax.\n IMPRESSION:  Normal chest.\n",
    ("10000032", "53189527"): " IMPRESSION:  Small left pleural effusion.\n",
    ("11000011", "51000001"): "Moderate cardiomegaly.\n",
}


def _layout(root: Path) -> Path:
    for (subject, study), text in REPORTS.items():
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _expected() -> dict[str, str]:
    return {f"s{study}": text for (_, study), text in REPORTS.items()}


def test_jsonl(tmp_path):
    path = tmp_path / "reports.jsonl"
    path.write_text('{"id": "a", "text": "No pneumothorax."}\n\n'
                    '{"id": 7, "text": "Small effusion.", "extra": 1}\n', encoding="utf-8")
    assert list(iter_report_inputs(path)) == [("a", "No pneumothorax."), ("7", "Small effusion.")]


def test_jsonl_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "reports.jsonl"
    path.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(ReportInputError, match=r"reports\.jsonl:2: not valid JSON"):
        list(iter_report_inputs(path))


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "a"}', "missing key\\(s\\) text"),
    ('{"text": "x"}', "missing key\\(s\\) id"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"id": "a", "text": 3}', "'text' must be a string"),
])
def test_jsonl_bad_objects(tmp_path, line, message):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "ok", "text": "ok"}) + "\n" + line + "\n")
    with pytest.raises(ReportInputError, match=rf"in\.jsonl:2: {message}"):
        list(iter_report_inputs(path))


def test_one_txt_report(tmp_path):
    path = tmp_path / "s50414267.txt"
    path.write_bytes(b" FINDINGS: Small effusion.\n")
    assert list(iter_report_inputs(path)) == [("s50414267", " FINDINGS: Small effusion.\n")]


def test_txt_report_with_a_stray_byte_is_still_read(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes(b"Small effusion \xe9.\n")
    [(report_id, text)] = list(iter_report_inputs(path))
    assert report_id == "old" and text.startswith("Small effusion")


def test_mimic_reports_folder(tmp_path):
    root = _layout(tmp_path / "mimic-cxr-reports")
    assert dict(iter_report_inputs(root)) == _expected()
    # the folder above files/ works too (recursive)
    assert dict(iter_report_inputs(tmp_path)) == _expected()


@pytest.mark.parametrize("top", ["", "mimic-cxr-reports/"])
def test_mimic_reports_zip(tmp_path, top):
    path = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(path, "w") as z:
        for (subject, study), text in REPORTS.items():
            z.writestr(f"{top}files/p{subject[:2]}/p{subject}/s{study}.txt", text)
        z.writestr(f"{top}README.txt", "not a report")
    assert dict(iter_report_inputs(path)) == _expected()


def test_missing_path(tmp_path):
    with pytest.raises(ReportInputError, match="not found: .*nothing-here"):
        list(iter_report_inputs(tmp_path / "nothing-here"))


def test_unsupported_kind(tmp_path):
    path = tmp_path / "reports.csv"
    path.write_text("id,text\n")
    with pytest.raises(ReportInputError, match="unsupported reports input .*reports.csv"):
        list(iter_report_inputs(path))


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    (folder / "files").mkdir(parents=True)
    (folder / "notes.txt").write_text("not a report")
    with pytest.raises(ReportInputError, match="reports folder .*empty.*no reports"):
        list(iter_report_inputs(folder))


def test_empty_zip(tmp_path):
    path = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("README.txt", "nothing")
    with pytest.raises(ReportInputError, match="reports zip .*mimic-cxr-reports.zip.*no reports"):
        list(iter_report_inputs(path))


def test_broken_zip(tmp_path):
    path = tmp_path / "mimic-cxr-reports.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ReportInputError, match="mimic-cxr-reports.zip"):
        list(iter_report_inputs(path))


def test_jsonl_with_bytes_that_are_not_utf8_is_read_as_latin1_line_by_line(tmp_path):
    path = tmp_path / "old.jsonl"
    latin1 = b'{"id": "a", "text": "Caf\xe9: small effusion."}\n'
    utf8 = '{"id": "b", "text": "\u00e9panchement pleural."}\n'.encode()
    path.write_bytes(latin1 + utf8)
    assert list(iter_report_inputs(path)) == [("a", "Caf\u00e9: small effusion."),
                                               ("b", "\u00e9panchement pleural.")]


def test_cli_concepts_on_non_utf8_jsonl_writes_every_report_without_traceback(tmp_path):
    import json

    from typer.testing import CliRunner

    from advbench.cli import app

    path = tmp_path / "old.jsonl"
    path.write_bytes(b'{"id": "a", "text": "FINDINGS: Small left pleural effusion \xb1."}\n'
                     b'{"id": "b", "text": "FINDINGS: Lungs are clear."}\n')
    result = CliRunner().invoke(app, ["concepts", str(path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["concepts"]["effusion"] == "positive"
    assert result.exception is None


def test_unreadable_txt_names_the_file(tmp_path, monkeypatch):
    from pathlib import Path

    path = tmp_path / "locked.txt"
    path.write_text("x")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ReportInputError, match="cannot read .*locked.txt: Permission denied"):
        list(iter_report_inputs(path))


def test_corrupt_member_of_a_reports_zip_names_the_member(tmp_path):
    import zipfile

    path = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("files/p10/p10000001/s50000001.txt", "FINDINGS: clear lungs. " * 50)
    data = bytearray(path.read_bytes())
    data[60:90] = b"\x00" * 30  # inside the deflated member
    path.write_bytes(bytes(data))
    with pytest.raises(ReportInputError, match="s50000001.txt"):
        list(iter_report_inputs(path))


def _labelled_jsonl(tmp_path, copies: int = 3):
    import json
    from pathlib import Path

    data = Path(__file__).parent / "data" / "concepts"
    rows = [json.loads(x) for name in ("dev.jsonl", "gold.jsonl")
            for x in (data / name).read_text("utf-8").splitlines() if x.strip()]
    path = tmp_path / "reports.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for k in range(copies):
            for r in rows:
                f.write(json.dumps({"id": f"{r['id']}-{k}", "text": r["text"]}) + "\n")
    return path, copies * len(rows)


def test_cli_concepts_on_two_workers_writes_the_same_lines_in_the_same_order(tmp_path):
    from typer.testing import CliRunner

    from advbench.cli import app

    path, n = _labelled_jsonl(tmp_path)  # 1,500 reports: three chunks of 500
    one = CliRunner().invoke(app, ["concepts", str(path), "--workers", "1"])
    two = CliRunner().invoke(app, ["concepts", str(path), "--workers", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    assert len(one.stdout.splitlines()) == n
    assert two.stdout == one.stdout


def test_cli_concepts_on_two_workers_names_a_bad_line_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from advbench.cli import app

    path, n = _labelled_jsonl(tmp_path, copies=2)
    with open(path, "a", encoding="utf-8") as f:
        f.write("{not json\n")
    result = CliRunner().invoke(app, ["concepts", str(path), "--workers", "2"])
    assert result.exit_code == 2
    assert f"reports.jsonl:{n + 1}: not valid JSON" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

"""Cohort report: sections and numbers, self-containment, rendering in headless Chromium (screenshot + DOM +
console), empty outputs, the CLI and object storage."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_qc_fixture import make_output

from pipeline.qc.cli import main as qc_main
from pipeline.qc.report import build_report
from pipeline.qc.report_sections import SECTIONS

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def run_chromium(args: list[str], timeout: int = 90) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium not installed (CI installs it: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": profile},
        )


def console_messages(stderr: str) -> list[str]:
    """Console output of the page (the report has no scripts, so any console line is a failure)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def test_console_detector_catches_errors(tmp_path):
    """Control: the console check above does see a page's errors."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); undefinedFn();</script>x</body></html>")
    r = run_chromium(["--enable-logging=stderr", "--v=0", f"--screenshot={tmp_path / 'b.png'}", bad.as_uri()])
    msgs = console_messages(r.stderr)
    assert any("boom" in m for m in msgs) and any("Uncaught ReferenceError" in m for m in msgs), r.stderr[-2000:]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    facts = make_output(root)
    path = build_report(str(facts["output"]))
    return facts, Path(path), Path(path).read_text(encoding="utf-8")


def test_sections_and_numbers(report):
    facts, path, html = report
    assert path == facts["output"] / "report.html"
    for s in SECTIONS:
        assert f'<section id="{s}">' in html, s
    # status counts and grouped error messages
    assert "ok / error / ungradable" in html and "6 / 2 / 1" in html
    assert "corrupt or truncated JPEG file" in html and "no field of view found" in html
    # quality grades, biomarker histograms overall and by site/device/eye
    assert "quality_grade by site" in html
    assert html.count("<svg") >= 7 * 4
    for g in ("site", "device", "eye"):
        assert f"CRAE (um, zone B): by {g}" in html
    # the planted CRAE outlier (320 um, subj001) is listed with its overlay embedded
    outliers = html[html.index('<section id="outliers">'):html.index('<section id="runs">')]
    assert "subj001/visit 1#L" in outliers and "data:image/jpeg;base64," in outliers
    # run config, model card and timings from _runs/*.json
    assert "classical-v1" in html and "weights-free" in html and "segment_s" in html and "processing_s" in html


def test_laterality_check_lists_the_mislabelled_eye(report):
    """The fixture's image 4 is labelled the left eye in the manifest while the photograph shows the right one."""
    _, _, html = report
    sec = html[html.index('<section id="laterality">'):html.index('<section id="biomarkers">')]
    counts = re.search(r"<td>manifest eye</td>((?:<td[^>]*>[^<]*</td>)+)</tr>", sec)
    assert counts and re.findall(r">(\d+)<", counts.group(1)) == ["5", "1"]  # agrees, disagrees (6 ok images)
    listed = sec[sec.index("<h3>Disagreements</h3>"):]
    assert "subj004/visit 1#R" in listed and listed.count("<tr>") == 1 + 1  # header + the one image
    assert "DICOM header" not in sec  # no image states an eye in a DICOM header


def test_duplicate_files_are_grouped_with_linkage_conflicts_first():
    """Identical bytes (file_sha256) group ok images; a group spanning two participants or eyes is a linkage conflict
    and is listed first. Eye spellings are normalised (OD = right), so a copy labelled both ways is no conflict."""
    import polars as pl

    from pipeline.qc.duplicates import duplicate_queries, duplicate_section

    ok = pl.LazyFrame({
        "image_id": ["a", "b", "c", "d", "e", "f", "g"],
        "file_sha256": ["h1" * 32, "h1" * 32, "h2" * 32, "h2" * 32, "h3" * 32, None, None],
        "participant_id": ["P1", "P1", "P2", "P3", "P4", "P5", "P6"],
        "eye": ["OD", "right", "OS", "OS", "OD", "OD", "OD"],
    })
    groups = duplicate_queries(ok, ok.collect_schema())["duplicates"].collect().sort("file_sha256")
    assert groups["image_ids"].to_list() == [["a", "b"], ["c", "d"]]  # no group of one, no group of unknown hashes
    assert groups["participants"].to_list() == [["P1"], ["P2", "P3"]] and groups["eyes"].to_list() == [["right"], ["left"]]
    assert groups["conflict"].to_list() == [False, True]
    html = duplicate_section(groups)
    assert "2 files stored more than once: 4 ok images, 2 of them copies" in html and "<b>1</b> of these" in html
    rows = re.findall(r"<tr><td>([0-9a-z]{12})</td>", html)
    assert rows == ["h2" * 6, "h1" * 6]  # the conflict first
    assert duplicate_queries(ok.drop("file_sha256"), ok.drop("file_sha256").collect_schema()) == {}
    assert "no file hashes" in duplicate_section(None)


def test_self_contained(report):
    _, _, html = report
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html)


def test_renders_in_chromium(report, tmp_path):
    """Screenshot is non-blank at the requested size, the DOM has every section, no console errors."""
    import cv2

    _, path, _ = report
    shot = tmp_path / "shot.png"
    r = run_chromium(["--window-size=1280,2000", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0", path.as_uri()])
    assert shot.exists(), r.stderr[-2000:]
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (2000, 1280)
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # not blank
    header = img[5:40, 5:400]  # the dark header band rendered with its colour (#1d3557, BGR)
    assert np.abs(header.reshape(-1, 3).astype(int) - [0x57, 0x35, 0x1D]).sum(1).min() < 10
    assert not console_messages(r.stderr), console_messages(r.stderr)
    dom = run_chromium(["--dump-dom", path.as_uri()])
    assert dom.returncode == 0, dom.stderr[-2000:]
    for s in SECTIONS:
        assert f'id="{s}"' in dom.stdout, s
    assert dom.stdout.count("<svg") >= 20 and "<img" in dom.stdout


def test_empty_output(tmp_path):
    (tmp_path / "out").mkdir()
    html = Path(build_report(str(tmp_path / "out"))).read_text()
    assert "No images table" in html and '<section id="runs">' in html


def test_only_failures(tmp_path):
    facts = make_output(tmp_path, n_ok=0, n_error=3, n_ungradable=2)
    html = Path(build_report(str(facts["output"]))).read_text()
    assert "0 / 3 / 2" in html and "no outliers" in html


def test_cli_and_s3(tmp_path, s3_bucket, capsys):
    import fsspec

    facts = make_output(tmp_path)
    dest = tmp_path / "r.html"
    assert qc_main(["report", str(facts["output"]), "--out", str(dest), "--title", "Cohort X", "--outlier-overlays", "0"]) == 0
    html = dest.read_text()
    assert "<title>Cohort X</title>" in html and "data:image/jpeg" not in html
    fs = fsspec.filesystem("s3")
    fs.put(str(facts["output"]), f"{s3_bucket}/o", recursive=True)
    assert qc_main(["report", f"s3://{s3_bucket}/o"]) == 0
    with fs.open(f"{s3_bucket}/o/report.html", "rb") as f:
        remote = f.read().decode()
    assert '<section id="outliers">' in remote and "6 / 2 / 1" in remote
    assert "data:image/jpeg;base64," in remote  # overlay rendered from masks on S3, source read from local path


def test_learned_model_card_embedded(tmp_path):
    """A run with learned weights: the card beside the .safetensors (matched by sha256) is shown."""
    import json

    facts = make_output(tmp_path)
    out = facts["output"]
    weights = tmp_path / "w" / "retsam-test.safetensors"
    weights.parent.mkdir()
    (tmp_path / "w" / "retsam-test.json").write_text(json.dumps({"name": "retsam-test", "sha256": "ab" * 32, "metrics": {"vessel_dsc_drive_free": 0.777}}))
    run = dict(facts["run"], config={"segmenter": str(weights)}, segmenter={"segmenter": "retsam-test-1", "model_hash": "ab" * 32})
    (out / "_runs" / f"{run['run_id']}.json").write_text(json.dumps(run))
    html = Path(build_report(str(out), outlier_overlays=0)).read_text()
    assert "model card (retsam-test.json)" in html and "vessel_dsc_drive_free" in html

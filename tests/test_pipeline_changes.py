"""Files replaced on storage after they were processed: a rerun names them, and processes them again when asked
(--reprocess-changed), each image still once in the output; a dry run says so and writes nothing (real Ray, real
Parquet, real files)."""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa

from pipeline.changes import find_changes
from pipeline.listing import list_inputs
from pipeline.cli import main
from pipeline.runner import dry_run, run_cohort
from pipeline.scan import scan
from pipeline.storage import filesystem
from tests.pipeline_fixtures import copy_images, fast_config

NAMES = ["retina_q75.jpg", "retina_hflip.jpg", "odd_rgba.png"]


def _rows(out) -> pl.DataFrame:
    return scan(str(out))["images"].collect().sort("image_id")


def _run(inp, out, **kw) -> tuple[dict, list[str]]:
    lines: list[str] = []
    s = run_cohort(str(inp), str(out), fast_config(), progress=False, log=lines.append, **kw)
    return s, lines


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_changed_files_are_named_and_processed_again_on_request(demo_cohort, tmp_path, ray_local, capsys):
    inp = copy_images(demo_cohort.input_dir, tmp_path / "in", NAMES)
    out = tmp_path / "out"
    first, _ = _run(inp, out)
    assert first["processed"] == 3 and first["changed_on_storage"] == 0

    # a re-export of another size, and a same-size replacement (one byte of the JPEG's scan data altered)
    (inp / "retina_q75.jpg").write_bytes((demo_cohort.input_dir / "retina_q95.jpg").read_bytes())
    same = bytearray((inp / "retina_hflip.jpg").read_bytes())
    same[len(same) // 2] ^= 0xFF
    (inp / "retina_hflip.jpg").write_bytes(bytes(same))

    files_before = sorted((f.relative_to(out), f.stat().st_mtime_ns) for f in out.rglob("*"))
    for check, expected in ((None, []), ("size", ["retina_q75.jpg"]), ("sha256", ["retina_hflip.jpg", "retina_q75.jpg"])):
        plan = dry_run(str(inp), str(out), fast_config(), reprocess_changed=check, log=lambda m: None)
        assert plan["first_to_process"] == expected and plan["superseding"] == len(expected)
        assert plan["changed_on_storage"] == (1 if check is None else len(expected))
    assert main(["run", str(inp), str(out), "--dry-run", "--reprocess-changed"]) == 0
    assert "1 would be processed (1 replacing existing rows)" in capsys.readouterr().out
    assert sorted((f.relative_to(out), f.stat().st_mtime_ns) for f in out.rglob("*")) == files_before  # nothing written

    plain, lines = _run(inp, out)  # no request: nothing processed, the size change named
    assert plain["processed"] == 0 and plain["changed_on_storage"] == 1
    warning = [line for line in lines if line.startswith("warning:") and "changed on storage" in line]
    assert len(warning) == 1 and "'retina_q75.jpg'" in warning[0] and "--reprocess-changed" in warning[0]

    by_size, _ = _run(inp, out, reprocess_changed="size")
    assert by_size["processed"] == 1 and by_size["superseded"] == 1
    rows = _rows(out)
    assert rows["image_id"].to_list() == sorted(NAMES)  # each image once
    now = dict(zip(rows["image_id"], rows["file_sha256"]))
    assert now["retina_q75.jpg"] == _sha(inp / "retina_q75.jpg")
    assert now["retina_hflip.jpg"] != _sha(inp / "retina_hflip.jpg")  # same size: the size check cannot see it

    by_hash, lines = _run(inp, out, reprocess_changed="sha256")
    assert by_hash["processed"] == 1 and by_hash["changed_on_storage"] == 1
    assert any("1 by sha256" in line and "'retina_hflip.jpg'" in line for line in lines)
    rows = _rows(out)
    assert rows["image_id"].to_list() == sorted(NAMES)
    assert dict(zip(rows["image_id"], rows["file_sha256"])) == {n: _sha(inp / n) for n in NAMES}
    assert rows.filter(pl.col("image_id") == "retina_hflip.jpg")["run_id"].item() == by_hash["run_id"]

    again, _ = _run(inp, out, reprocess_changed="sha256")
    assert again["processed"] == 0 and again["changed_on_storage"] == 0


def test_a_manifest_file_missing_then_present_is_processed_when_sizes_are_asked(demo_cohort, tmp_path, ray_local):
    inp = copy_images(demo_cohort.input_dir, tmp_path / "in", NAMES[:1])
    manifest = inp / "manifest.csv"
    manifest.write_text("path,participant_id\nretina_q75.jpg,P1\nlate.jpg,P2\n")
    out = tmp_path / "out"
    first, _ = _run(manifest, out)
    assert (first["ok"], first["error"]) == (1, 1)
    (inp / "late.jpg").write_bytes((demo_cohort.input_dir / "retina_hflip.jpg").read_bytes())

    plain, lines = _run(manifest, out)  # a manifest lists no sizes: said, not guessed
    assert plain["processed"] == 0 and plain["changed_on_storage"] == 0
    assert any(line.startswith("2 processed files not checked for changes") for line in lines)

    asked, _ = _run(manifest, out, reprocess_changed="size")
    assert asked["processed"] == 1 and asked["changed_on_storage"] == 1
    rows = _rows(out)
    assert rows["image_id"].to_list() == ["late.jpg", "retina_q75.jpg"]
    late = rows.filter(pl.col("image_id") == "late.jpg").row(0, named=True)
    assert late["status"] == "ok" and late["participant_id"] == "P2" and late["file_bytes"] == (inp / "late.jpg").stat().st_size


def test_folder_listing_sizes_and_rows_written_before_hashes(tmp_path):
    """The listing's sizes are the files'; rows of an older output without file_bytes/file_sha256 are never called
    changed (nothing to compare), and the sha256 check says how many it could not check."""
    inp = tmp_path / "in"
    inp.mkdir()
    for name, size in (("a.jpg", 10), ("b.png", 0), ("c.jpg", 7)):
        (inp / name).write_bytes(b"x" * size)
    listing = list_inputs(str(inp))
    assert listing.table["listed_bytes"].to_pylist() == [10, 0, 7]
    assert "listed_bytes" not in listing.metadata_columns
    done = pa.table({"image_id": ["a.jpg", "b.png", "c.jpg"], "status": ["ok", "error", "ok"],
                     "file_bytes": pa.nulls(3, pa.int64()), "file_sha256": pa.nulls(3, pa.string())})
    fs = filesystem(str(inp))
    assert len(find_changes(listing.table, done, fs)) == 0
    stored = done.set_column(2, "file_bytes", pa.array([10, 0, 6], pa.int64()))
    changes = find_changes(listing.table, stored, fs, "sha256")
    assert changes.image_ids == ["c.jpg"] and changes.by_size == 1
    assert changes.hashes_unknown == 1  # a.jpg: same size, no stored hash; b.png: empty, nothing to hash


def test_the_cli_flag_defaults_to_the_size_check():
    from pipeline.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["run", "in", "out"]).reprocess_changed is None
    assert parse(["run", "in", "out", "--reprocess-changed"]).reprocess_changed == "size"
    assert parse(["run", "in", "out", "--reprocess-changed", "sha256"]).reprocess_changed == "sha256"

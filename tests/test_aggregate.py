"""`retsam aggregate`: the rules that reduce images to one row per participant/eye, on hand-made rows where each
rule decides one image (the end-to-end run on the demo output is in test_qc_pipeline.py)."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.qc.aggregate import aggregate, arrow_table

BY = ["participant_id", "eye"]


def _images() -> pl.LazyFrame:
    return pl.LazyFrame({
        "image_id": ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
        "status": ["ok", "ok", "ok", "ok", "ok", "error", "ok", "ok", "ok"],
        "participant_id": ["P1", "P1", "P1", "P2", "P3", "P1", None, "P2", "P2"],
        "eye": ["OD", "OD", "OD", "OS", "OS", "OD", "OD", "OS", "OS"],
        "file_sha256": ["x", "x", "y", "z", "z", "w", "v", "u", None],
        "gradable": [True, True, True, True, True, None, True, False, True],
        "crae_knudtson_um_zone_b": [100.0, 100.0, 120.0, 90.0, 95.0, None, 80.0, 70.0, None],
        "microaneurysm_count": [1, 1, 3, None, 0, None, 0, 5, 2],
        "microaneurysm_etdrs_centre_involved": [True, True, False, None, False, None, True, True, False],
        "laterality": ["right"] * 9,  # text: dropped
    })


def test_each_rule_decides_the_images_it_names():
    r = aggregate(_images(), BY)
    rows = {(x["participant_id"], x["eye"]): x for x in r.table.to_dicts()}
    assert set(rows) == {("P1", "OD"), ("P2", "OS")}
    p1, p2 = rows["P1", "OD"], rows["P2", "OS"]
    # b is a copy of a (same bytes, same group): counted once; f is not ok
    assert p1["image_ids"] == ["a", "c"] and p1["n_images"] == 2
    assert p1["crae_knudtson_um_zone_b"] == pytest.approx(110.0) and p1["microaneurysm_count"] == pytest.approx(2.0)
    assert p1["microaneurysm_etdrs_centre_involved"] == pytest.approx(0.5)  # a fraction of the images
    # d shares its file with e (P3): neither can be attributed; h is graded reject; i has no hash and no CRAE
    assert p2["image_ids"] == ["i"] and p2["crae_knudtson_um_zone_b"] is None  # nulls are not zeros
    assert r.left_out == {"copy of a file already counted": 1, "missing participant_id/eye": 1,
                          "quality grade reject": 1, "same file under two groups": 2}
    assert r.images_used == 3 and "laterality" not in r.table.columns


def test_rejected_images_on_request_and_metadata_carries_units():
    r = aggregate(_images(), BY, include_rejected=True)
    p2 = r.table.filter(pl.col("participant_id") == "P2").row(0, named=True)
    assert p2["image_ids"] == ["h", "i"] and p2["crae_knudtson_um_zone_b"] == pytest.approx(70.0)
    t = arrow_table(r, BY, "s3://bucket/out")
    crae = t.schema.field("crae_knudtson_um_zone_b").metadata
    assert crae[b"unit"] == b"um" and crae[b"description"].startswith(b"mean over the group's images with a value of")
    assert t.schema.field("microaneurysm_etdrs_centre_involved").metadata[b"unit"] == b"ratio"
    assert t.schema.metadata[b"by"] == b"participant_id,eye" and b"same file under two groups=2" in t.schema.metadata[b"left_out"]


def test_an_unknown_column_is_refused_with_the_ones_there():
    with pytest.raises(ValueError, match="cannot group by visit: not a column.*participant_id, eye"):
        aggregate(_images(), ["participant_id", "visit"])

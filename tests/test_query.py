"""`retsam query`: DuckDB views over the hive-partitioned output (local and S3), printing and CSV/Parquet export."""

from __future__ import annotations

import shutil

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.qc.cli import main as qc_main
from pipeline.qc.query import connect, export, query
from test_qc_fixture import make_output


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    return make_output(tmp_path_factory.mktemp("query"))


def test_views_and_counts(facts):
    out = str(facts["output"])
    t = query(out, "SELECT (SELECT count(*) FROM images) i, (SELECT count(*) FROM masks) m, (SELECT count(*) FROM segments) s")
    assert t.to_pylist() == [{"i": 9, "m": 6, "s": 18}]
    st = {r["status"]: r["n"] for r in query(out, "SELECT status, count(*) n FROM images GROUP BY status").to_pylist()}
    assert st == {"ok": 6, "error": 2, "ungradable": 1}
    # hive partition column and joins across tables
    b = query(out, "SELECT DISTINCT batch FROM images ORDER BY 1").column("batch").to_pylist()
    assert len(b) == 2 and all(x.endswith(("-00000", "-00001")) for x in b)
    j = query(out, "SELECT i.site, count(*) n FROM segments s JOIN images i USING (image_id) GROUP BY 1 ORDER BY 1").to_pylist()
    assert sum(r["n"] for r in j) == 18


def test_mean_crae_by_site_matches_polars(facts):
    out = str(facts["output"])
    got = {r["site"]: r["crae"] for r in query(out, "SELECT site, avg(crae_knudtson_um_zone_b) crae FROM images WHERE status = 'ok' GROUP BY site").to_pylist()}
    df = pl.DataFrame(facts["images"]).filter(pl.col("status") == "ok").group_by("site").agg(pl.col("crae_knudtson_um_zone_b").mean())
    want = dict(df.iter_rows())
    assert got.keys() == want.keys()
    for k in got:
        assert (got[k] is None and want[k] is None) or abs(got[k] - want[k]) < 1e-9, k


def test_uncommitted_batches_hidden(tmp_path):
    """Same rule as pipeline.scan: a masks/segments batch without an images file (run in progress) is not read."""
    facts = make_output(tmp_path)
    out = facts["output"]
    src = next((out / "masks").iterdir())
    shutil.copytree(src, out / "masks" / "batch=inflight-00009")
    con = connect(str(out))
    assert con.execute("SELECT count(*) FROM masks").fetchall() == [(6,)]
    assert con.execute("SELECT count(*) FROM masks_all").fetchall() == [(6,)]  # not even in the raw view
    con.close()


def test_export_csv_parquet(facts, tmp_path):
    out = str(facts["output"])
    n = export(out, "SELECT image_id, site, avr_knudtson_zone_b FROM images WHERE status = 'ok'", str(tmp_path / "a.csv"))
    assert n == 6
    csv = pl.read_csv(tmp_path / "a.csv")
    assert csv.columns == ["image_id", "site", "avr_knudtson_zone_b"] and csv.height == 6
    n = export(out, "SELECT * FROM segments", str(tmp_path / "s.parquet"))
    assert n == 18 and pq.read_table(tmp_path / "s.parquet").num_rows == 18
    with pytest.raises(ValueError):
        export(out, "SELECT 1", str(tmp_path / "x.txt"))


def test_cli(facts, tmp_path, capsys):
    out = str(facts["output"])
    assert qc_main(["query", out, "SELECT site, count(*) AS n FROM images GROUP BY site ORDER BY site"]) == 0
    printed = capsys.readouterr().out
    assert "kyoto" in printed and "leeds" in printed and "(3 rows)" in printed
    assert qc_main(["query", out, "SELECT image_id, mask_vessel FROM masks", "--max-rows", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mask_vessel (bytes)" in printed and "4 more rows" in printed
    sql = tmp_path / "q.sql"
    sql.write_text("SELECT image_id FROM images WHERE status <> 'ok';")
    assert qc_main(["query", out, f"@{sql}", "--out", str(tmp_path / "bad.csv")]) == 0
    assert pl.read_csv(tmp_path / "bad.csv").height == 3
    assert qc_main(["query", out, "SELECT nope FROM images"]) == 1
    assert "query failed" in capsys.readouterr().err


def test_s3(facts, s3_bucket, tmp_path):
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.put(str(facts["output"]), f"{s3_bucket}/out", recursive=True)
    root = f"s3://{s3_bucket}/out"
    t = query(root, "SELECT status, count(*) n FROM images GROUP BY 1 ORDER BY 1")
    assert t.to_pylist() == [{"status": "error", "n": 2}, {"status": "ok", "n": 6}, {"status": "ungradable", "n": 1}]
    assert query(root, "SELECT count(*) n FROM masks WHERE mask_vessel IS NOT NULL").to_pylist() == [{"n": 6}]
    assert query(root, "SELECT count(DISTINCT batch) n FROM segments").to_pylist() == [{"n": 2}]
    assert export(root, "SELECT * FROM images", f"{root}/exports/images.parquet") == 9
    with fs.open(f"{s3_bucket}/out/exports/images.parquet", "rb") as f:
        assert pq.read_table(f).num_rows == 9
    assert qc_main(["query", root, "SELECT count(*) FROM images", "--out", str(tmp_path / "n.csv")]) == 0

"""`retsam query OUTPUT "SQL"`: DuckDB over the hive-partitioned output tables.

Views `images`, `segments` and `masks` are registered (a table without files gets no view). Local outputs are
read by DuckDB's own Parquet reader (`read_parquet(..., hive_partitioning=true, union_by_name=true)`), which
streams and pushes projections/filters down. Object-storage outputs (s3://, gs://, ...) are read through fsspec
as lazy pyarrow datasets registered in DuckDB (DuckDB's httpfs extension would need a download, which an offline
cluster cannot do); projections and filters are still pushed down into the Arrow scan.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from pipeline.qc.common import TABLES, arrow_dataset, committed_files, is_remote, write_bytes


def connect(output: str, storage_options: Mapping[str, Any] | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the output's tables as views.

    Same rows as `pipeline.scan`: committed batches only, and segments/masks restricted to rows whose image (and
    quantification id) is current in images (leftovers of interrupted runs or superseded reprocessing are hidden).
    The raw files are also visible as `images_all`, `segments_all`, `masks_all`.
    """
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    files = committed_files(output, storage_options)
    present = []
    for t in TABLES:
        if not files[t]:
            continue
        if is_remote(output):
            d = arrow_dataset(output, t, files[t], storage_options)
            con.register(f"_{t}_arrow", d)
            con.execute(f"CREATE VIEW {t}_all AS SELECT * FROM _{t}_arrow")
        else:
            lst = "[" + ", ".join(_sql_str(f) for f in files[t]) + "]"
            con.execute(
                f"CREATE VIEW {t}_all AS SELECT * FROM read_parquet({lst}, hive_partitioning = true, "
                f"union_by_name = true, hive_types = {{'batch': VARCHAR}})"
            )
        present.append(t)
    if "images" in present:
        con.execute("CREATE VIEW images AS SELECT * FROM images_all")
        icols = {r[0] for r in con.execute("DESCRIBE images").fetchall()}
        for t in ("segments", "masks"):
            if t not in present:
                continue
            tcols = {r[0] for r in con.execute(f"DESCRIBE {t}_all").fetchall()}
            keys = ["image_id", "batch"] + (["quant_id"] if t == "segments" and {"quant_id"} <= icols & tcols else [])
            keys = [k for k in keys if k in tcols and k in icols]
            cond = " AND ".join(f"i.{k} IS NOT DISTINCT FROM x.{k}" for k in keys)
            con.execute(f"CREATE VIEW {t} AS SELECT x.* FROM {t}_all x WHERE EXISTS (SELECT 1 FROM images i WHERE {cond})")
    return con


def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def query(output: str, sql: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Run `sql` against the output and return the result as an Arrow table."""
    con = connect(output, storage_options)
    try:
        return _to_arrow(con.sql(sql))
    finally:
        con.close()


def _to_arrow(rel) -> pa.Table:
    if rel is None:
        return pa.table({})
    t = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    return t.read_all() if isinstance(t, pa.RecordBatchReader) else t


def export(output: str, sql: str, dest: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """Run `sql` and write the result to `dest` (.csv or .parquet; local or object storage). Returns row count."""
    fmt = "csv" if dest.lower().endswith(".csv") else "parquet" if dest.lower().endswith((".parquet", ".pq")) else None
    if fmt is None:
        raise ValueError(f"--out must end with .csv or .parquet, got {dest!r}")
    con = connect(output, storage_options)
    try:
        if not is_remote(dest):
            from pathlib import Path

            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            opts = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet, COMPRESSION zstd"
            res = con.execute(f"COPY ({sql}) TO {_sql_str(dest)} ({opts})").fetchall()
            if res and res[0] and isinstance(res[0][0], int):
                return int(res[0][0])
            return _parquet_rows(dest) if fmt == "parquet" else -1
        table = _to_arrow(con.sql(sql))
    finally:
        con.close()
    import io

    buf = io.BytesIO()
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, buf)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, buf, compression="zstd")
    write_bytes(dest, buf.getvalue(), storage_options)
    return table.num_rows


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def print_result(output: str, sql: str, storage_options: Mapping[str, Any] | None = None, max_rows: int = 50, file=None) -> int:
    """Print the result as a text table (at most `max_rows` rows; binary columns shown by size)."""
    import polars as pl

    file = file or sys.stdout
    table = query(output, sql, storage_options)
    df = pl.from_arrow(table) if table.num_columns else pl.DataFrame()
    if isinstance(df, pl.Series):
        df = df.to_frame()
    bin_cols = [c for c, dt in df.schema.items() if dt == pl.Binary]
    if bin_cols:
        df = df.with_columns([pl.col(c).bin.size().alias(c) for c in bin_cols]).rename({c: f"{c} (bytes)" for c in bin_cols})
    with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(df.head(max_rows), file=file)
    if df.height > max_rows:
        print(f"... {df.height - max_rows:,} more rows (use --out file.csv|.parquet for all)", file=file)
    print(f"({df.height:,} rows)", file=file)
    return df.height

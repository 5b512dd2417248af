"""Turn a group of quantified blocks (object-store refs) into staged Parquet files, inside a Ray task.

Masks and segments never pass through the driver: one task concatenates the group's blocks, writes the segments
file and the masks file(s) to staging, and returns only the small per-image columns to the driver, which adds the
manifest metadata and writes the images file (the commit marker) after publishing the others.
"""

from __future__ import annotations

import io
import math
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema as S


def _write(fs, path: str, table: pa.Table, compression: str) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, buf.getvalue())


def stage_group(blocks: list, fs, staging_dir: str, targets: list[str], image_cols: list[str],
                compression: str = "zstd", masks_rows_per_file: int = 1000, segments_rows_per_file: int = 1_000_000,
                file_prefix: str = "", keep_ids: list[str] | None = None) -> pa.Table:
    """Write segments/ and masks/ of one commit group to `staging_dir`; return the image columns."""
    import ray

    from pipeline.stages import explode_segments, mask_rows

    tables = [b if isinstance(b, pa.Table) else ray.get(b) for b in blocks]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.schema([f for f in S.image_schema() if f.name in image_cols]).empty_table()
    t = pa.concat_tables(tables, promote_options="permissive")
    if keep_ids is not None:  # blocks may straddle two commit batches
        t = t.filter(pc.is_in(t["image_id"], value_set=pa.array(keep_ids, pa.string())))
    if "segments_ipc" in t.column_names:
        segs = explode_segments(t.select(["segments_ipc"]))
        n = max(1, math.ceil(segs.num_rows / segments_rows_per_file))
        step = math.ceil(segs.num_rows / n) if segs.num_rows else 0
        for i in range(n if segs.num_rows else 0):
            _write(fs, posixpath.join(staging_dir, "segments", f"{file_prefix}part-{i:03d}.parquet"),
                   segs.slice(i * step, step), compression)
    if "fov" in t.column_names:
        masks = mask_rows(t, S.mask_schema(targets))
        n = max(1, math.ceil(masks.num_rows / masks_rows_per_file))
        step = math.ceil(masks.num_rows / n) if masks.num_rows else 0
        for i in range(n if masks.num_rows else 0):
            _write(fs, posixpath.join(staging_dir, "masks", f"{file_prefix}part-{i:03d}.parquet"),
                   masks.slice(i * step, step), compression)
    return t.select([c for c in image_cols if c in t.column_names])

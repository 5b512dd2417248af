"""The output layout and its commit protocol.

```
OUTPUT/images/batch=<id>/part-0.parquet       ONE file per commit batch: the batch's commit marker
OUTPUT/segments/batch=<id>/<quant_id>-*.parquet
OUTPUT/masks/batch=<id>/*.parquet
OUTPUT/_staging/<id>/...                       work in progress, never read by readers
OUTPUT/_runs/<run_id>.json
```
A batch is visible once its images file exists. segments/ and masks/ are published first; the images file last
(local: an atomic rename; S3: a single PUT/copy is atomic). Anything under segments/ or masks/ whose batch has no
images file is an orphan of a killed run and is deleted by the next run (`cleanup`); `scan()` ignores it too.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import filesystem, protocol_of, strip_protocol, with_retries

TABLES = ("images", "segments", "masks")
BATCH_RE = re.compile(r"^batch=(.+)$")


class Output:
    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri.rstrip("/")
        self.protocol = protocol_of(uri)
        self.root = strip_protocol(uri).rstrip("/")
        self.storage_options = storage_options or {}
        self.fs = filesystem(uri, storage_options)
        self.local = self.protocol == "file"

    # paths -----------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def batch_dir(self, table: str, batch_id: str) -> str:
        return self.path(table, f"batch={batch_id}")

    def staging(self, batch_id: str, *parts: str) -> str:
        return self.path("_staging", batch_id, *parts)

    # listing ---------------------------------------------------------------------------------------------
    def batches(self, table: str) -> list[str]:
        base = self.path(table)
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            m = BATCH_RE.match(posixpath.basename(e.rstrip("/")))
            if m:
                out.append(m.group(1))
        return sorted(out)

    def committed_batches(self) -> list[str]:
        return [b for b in self.batches("images") if self.parquet_files(self.batch_dir("images", b))]

    def parquet_files(self, d: str) -> list[str]:
        try:
            return sorted(p for p in self.fs.ls(d, detail=False) if p.endswith(".parquet"))
        except FileNotFoundError:
            return []

    # reading ---------------------------------------------------------------------------------------------
    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        def read() -> pa.Table:
            with self.fs.open(path, "rb") as f:
                return pq.read_table(f, columns=columns)

        return with_retries(read)

    def read_images(self, columns: list[str] | None = None, batches: list[str] | None = None) -> pa.Table:
        """Committed image rows (+ `batch`), reading only `columns`: columnar, a few bytes per image. A column that
        a file lacks (written by an older version) comes back as nulls for its rows, as `scan()` gives it."""
        tables = []
        for b in batches if batches is not None else self.committed_batches():
            for p in self.parquet_files(self.batch_dir("images", b)):
                t = self._read_columns(p, columns)
                tables.append(t.append_column("batch", pa.array([b] * t.num_rows, pa.string())))
        if not tables:
            return pa.table({c: pa.array([], pa.string()) for c in (columns or ["image_id"]) + ["batch"]})
        return pa.concat_tables(tables, promote_options="permissive")

    def _read_columns(self, path: str, columns: list[str] | None) -> pa.Table:
        try:
            return self.read_parquet(path, columns=columns)
        except pa.ArrowInvalid:  # a column this file does not have: read it whole once, fill the gap with nulls
            t = self.read_parquet(path)
            return pa.table({c: t[c] if c in t.column_names else pa.nulls(t.num_rows) for c in columns})

    # writing ---------------------------------------------------------------------------------------------
    def write_table(self, table: pa.Table, path: str, compression: str = "zstd") -> None:
        """Write a Parquet file so that readers never see it half-written (temp name + rename / single PUT)."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=compression)
        data = buf.getvalue()
        if self.local:
            import os

            os.makedirs(posixpath.dirname(path), exist_ok=True)
            os.makedirs(self.path("_staging"), exist_ok=True)
            tmp = self.path("_staging", f"tmp-{uuid.uuid4().hex}.part")  # same filesystem: os.replace is atomic
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with_retries(lambda: self.fs.pipe_file(path, data))  # one PUT: atomic on S3

    def write_json(self, path: str, obj: Any) -> None:
        data = json.dumps(obj, indent=2, default=str).encode()
        if self.local:
            import os

            os.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = path + f".tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def publish_dir(self, src_dir: str, dst_dir: str, prefix: str = "") -> int:
        """Move every Parquet file of a staging folder into a final batch folder. Returns files moved."""
        files = self.parquet_files(src_dir)
        if not files:
            return 0
        if self.local:
            import os

            os.makedirs(dst_dir, exist_ok=True)
            for f in files:
                os.replace(f, posixpath.join(dst_dir, prefix + posixpath.basename(f)))
        else:
            for f in files:
                dst = posixpath.join(dst_dir, prefix + posixpath.basename(f))
                with_retries(lambda: self.fs.copy(f, dst))
        return len(files)

    def rm(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    # recovery --------------------------------------------------------------------------------------------
    def cleanup(self) -> dict[str, int]:
        """Remove what killed runs left behind: staging, and segments/masks of uncommitted batches, and
        segments files of a superseded quantification (reprocess killed half-way)."""
        removed = {"staging": 0, "orphan_batches": 0, "stale_segment_files": 0}
        if self.fs.exists(self.path("_staging")):
            removed["staging"] = len(self.fs.ls(self.path("_staging"), detail=False))
            self.rm(self.path("_staging"))
        committed = set(self.committed_batches())
        for table in ("segments", "masks"):
            for b in self.batches(table):
                if b not in committed:
                    self.rm(self.batch_dir(table, b))
                    removed["orphan_batches"] += 1
        for b in self.batches("images"):
            if b not in committed:  # an images folder without a file (killed during a local move)
                self.rm(self.batch_dir("images", b))
        for b in committed:
            seg_files = self.parquet_files(self.batch_dir("segments", b))
            if not seg_files:
                continue
            qids = set(self.read_images(["quant_id"], [b])["quant_id"].to_pylist())
            for p in seg_files:
                name = posixpath.basename(p)
                if not any(name.startswith(f"{q}-") for q in qids if q):
                    self.rm(p)
                    removed["stale_segment_files"] += 1
        return removed

    def dedupe(self) -> int:
        """Keep each image once: where an image was reprocessed into a newer batch (--force/--reprocess-*), drop it
        from the older batch's images file (rewritten atomically). Returns rows dropped."""
        import pyarrow.compute as pc

        t = self.read_images(["image_id"])
        if t.num_rows == 0:
            return 0
        g = t.group_by("image_id").aggregate([("batch", "max"), ("batch", "count")])
        dup = g.filter(pc.greater(g["batch_count"], 1))
        if dup.num_rows == 0:
            return 0
        keep = dict(zip(dup["image_id"].to_pylist(), dup["batch_max"].to_pylist()))
        dropped = 0
        stale_batches = {b for iid, b in zip(t["image_id"].to_pylist(), t["batch"].to_pylist()) if iid in keep and keep[iid] != b}
        for b in sorted(stale_batches):
            for p in self.parquet_files(self.batch_dir("images", b)):
                old = self.read_parquet(p)
                mask = pc.invert(pc.is_in(old["image_id"], value_set=pa.array([i for i, kb in keep.items() if kb != b], pa.string())))
                new = old.filter(mask)
                dropped += old.num_rows - new.num_rows
                if new.num_rows == 0:
                    self.rm(p)
                else:
                    self.write_table(new, p)
            self._prune_batch(b)
        return dropped

    def _prune_batch(self, batch_id: str) -> None:
        """After rows left a batch's images file: drop their segments/masks rows too (each file replaced
        atomically), or the whole batch folders when no image is left."""
        import pyarrow.compute as pc

        keep = self.read_images(["image_id"], [batch_id]) if self.parquet_files(self.batch_dir("images", batch_id)) else None
        if keep is None or keep.num_rows == 0:
            for table in ("images", "segments", "masks"):
                self.rm(self.batch_dir(table, batch_id))
            return
        ids = keep["image_id"]
        for table in ("segments", "masks"):
            for p in self.parquet_files(self.batch_dir(table, batch_id)):
                t = self.read_parquet(p)
                f = t.filter(pc.is_in(t["image_id"], value_set=ids))
                if f.num_rows == 0:
                    self.rm(p)
                elif f.num_rows != t.num_rows:
                    self.write_table(f, p)


class OutputLocked(RuntimeError):
    pass


class WriterLock:
    """One writer per output: `_lock.json` with run id, host, pid and a heartbeat (refreshed every 30 s).

    A lock is stale when its heartbeat is older than `stale_after_s`, or when it names a process of this host that
    no longer exists (a killed run resumed on the same machine takes over at once). A guard against accidental
    concurrent runs (e.g. a job submitted twice), not a distributed consensus: S3 has no atomic create-if-absent.
    """

    def __init__(self, out: Output, run_id: str, stale_after_s: float = 300.0, break_lock: bool = False):
        self.out, self.run_id, self.stale_after_s, self.break_lock = out, run_id, stale_after_s, break_lock
        self.path = out.path("_lock.json")
        self._stop = None

    def _payload(self) -> dict:
        import os
        import socket
        import time

        return {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}

    def _holder(self) -> dict | None:
        try:
            with self.out.fs.open(self.path, "rb") as f:
                return json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return None

    def live_holder(self) -> dict | None:
        """The run writing this output now (run id, host, pid, heartbeat), or None."""
        holder = self._holder()
        return holder if holder and self._alive(holder) else None

    def _alive(self, holder: dict) -> bool:
        import os
        import socket
        import time

        if time.time() - float(holder.get("heartbeat", 0)) > self.stale_after_s:
            return False
        if holder.get("host") == socket.gethostname():
            try:
                os.kill(int(holder.get("pid", -1)), 0)
            except (OSError, ValueError):
                return False
        return True

    def __enter__(self) -> "WriterLock":
        import threading

        holder = self._holder()
        if holder and holder.get("run_id") != self.run_id and self._alive(holder) and not self.break_lock:
            raise OutputLocked(
                f"{self.out.uri} is being written by run {holder.get('run_id')} (host {holder.get('host')}, pid "
                f"{holder.get('pid')}); wait for it, or pass --break-lock if that run is dead")
        self.out.write_json(self.path, self._payload())
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(30.0):
                try:
                    self.out.write_json(self.path, self._payload())
                except Exception:  # noqa: BLE001 - a missed heartbeat is not fatal
                    pass

        threading.Thread(target=beat, daemon=True, name="retsam-lock").start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
        holder = self._holder()
        if holder and holder.get("run_id") == self.run_id:
            self.out.rm(self.path)

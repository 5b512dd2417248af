"""Files replaced on storage after their row was written (a re-exported photograph, a corrected upload).

A rerun skips an image whose id is already in the output, so without this check it would keep biomarkers of bytes
that no longer exist. Two tests, cheapest first:

- size: the listing's size (free with a folder or prefix listing; one metadata request per file for a manifest)
  against the stored `file_bytes`. Every run does it where the listing gave sizes, and says what it found;
- sha256 (asked for): every already-processed file of unchanged size is read again and hashed against the stored
  `file_sha256`. It catches a same-size replacement at the price of reading the cohort once more (not decoding it).

A file deleted from storage is not a change: its row stays (the listing no longer names it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

CHECKS = ("size", "sha256")
T = TypeVar("T")


@dataclass
class Changes:
    image_ids: list[str] = field(default_factory=list)  # rows whose file changed: to process again when asked
    by_size: int = 0
    by_sha256: int = 0
    sizes_unknown: int = 0  # processed files the listing gave no size for (a manifest, when no check was asked)
    hashes_unknown: int = 0  # same-size files whose row has no hash (written before 0.2.5) or that are unreadable now

    def __len__(self) -> int:
        return len(self.image_ids)

    def report(self, reprocessing: bool) -> list[str]:
        """Log lines: what changed (a warning when it is not being processed again) and what could not be checked."""
        lines = []
        if self:
            how = ", ".join([f"{self.by_size} by size"] + ([f"{self.by_sha256} by sha256"] if self.by_sha256 else []))
            what = f"{len(self)} processed files changed on storage since their rows were written ({how}), e.g. {self.image_ids[0]!r}"
            lines.append(f"{what}: processing them again" if reprocessing else
                         f"warning: {what}: their rows describe the old files; rerun with --reprocess-changed")
        if self.sizes_unknown:
            lines.append(f"{self.sizes_unknown} processed files not checked for changes (a manifest lists no sizes; "
                         "--reprocess-changed asks storage for them)")
        if self.hashes_unknown:
            lines.append(f"{self.hashes_unknown} same-size files not hash-checked (no stored file_sha256, or unreadable now)")
        return lines


def find_changes(listing: pa.Table, done: pa.Table, fs, check: str | None = None, threads: int = 16) -> Changes:
    """Compare the listing (image_id, read_path, listed_bytes) with the stored rows (image_id, file_bytes and, for the
    sha256 check, file_sha256). `check` None: sizes the listing already has; "size": sizes asked of storage where
    the listing has none; "sha256": that, then same-size files read and hashed."""
    if check is not None and check not in CHECKS:
        raise ValueError(f"unknown change check {check!r}: one of {', '.join(CHECKS)}")
    if done.num_rows == 0 or "listed_bytes" not in listing.column_names:
        return Changes()
    types = {"image_id": pa.string(), "status": pa.string(), "file_bytes": pa.int64(), "file_sha256": pa.string()}
    stored = pa.table({c: pc.cast(done[c], types[c]) for c in ["image_id", "status", "file_bytes"]
                       + (["file_sha256"] if check == "sha256" else [])})  # an older file's missing column: nulls
    rows = listing.select(["image_id", "read_path", "listed_bytes"]).join(stored, "image_id", join_type="inner")
    unknown = pc.is_null(rows["listed_bytes"])
    if check is not None and pc.any(unknown).as_py():
        asked = rows.filter(unknown)
        sizes = _storage_sizes(asked["read_path"].to_pylist(), fs, threads)
        filled = dict(zip(asked["image_id"].to_pylist(), sizes))
        listed = [filled.get(i, b) for i, b in zip(rows["image_id"].to_pylist(), rows["listed_bytes"].to_pylist())]
        rows = rows.set_column(rows.column_names.index("listed_bytes"), "listed_bytes", pa.array(listed, pa.int64()))
        unknown = pc.is_null(rows["listed_bytes"])
    out = Changes(sizes_unknown=int(pc.sum(unknown).as_py() or 0))
    sized = rows.filter(pc.invert(unknown))
    # a file stored as unreadable (an error row without bytes) that has bytes now has changed too
    unread = pc.and_(pc.and_(pc.is_null(sized["file_bytes"]), pc.equal(sized["status"], "error")),
                     pc.greater(sized["listed_bytes"], 0))
    differs = pc.or_(pc.fill_null(pc.not_equal(sized["file_bytes"], sized["listed_bytes"]), False), unread)
    out.image_ids = sized.filter(differs)["image_id"].to_pylist()
    out.by_size = len(out.image_ids)
    if check == "sha256":
        same = sized.filter(pc.and_(pc.invert(differs), pc.greater(sized["listed_bytes"], 0)))  # 0 bytes: unchanged
        hashed = same.filter(pc.is_valid(same["file_sha256"]))
        out.hashes_unknown = same.num_rows - hashed.num_rows
        now = _storage_hashes(hashed["read_path"].to_pylist(), fs, threads)
        out.hashes_unknown += sum(h is None for h in now)
        moved = [i for i, stored, h in zip(hashed["image_id"].to_pylist(), hashed["file_sha256"].to_pylist(), now)
                 if h is not None and h != stored]
        out.by_sha256 = len(moved)
        out.image_ids += moved
    out.image_ids.sort()
    return out


def _storage_sizes(paths: list[str], fs, threads: int) -> list[int | None]:
    def size(path: str) -> int | None:
        value = fs.info(path).get("size")
        return int(value) if value is not None else None

    return _per_file(size, paths, threads)


def _storage_hashes(paths: list[str], fs, threads: int) -> list[str | None]:
    def digest(path: str) -> str:
        h = hashlib.sha256()
        with fs.open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        return h.hexdigest()

    return _per_file(digest, paths, threads)


def _per_file(fn: Callable[[str], T], paths: list[str], threads: int) -> list[T | None]:
    """`fn` over the files, `threads` requests in flight (object storage answers slowly, not busily); None for a
    file that is gone or unreadable now."""
    def safe(path: str) -> T | None:
        try:
            return fn(path)
        except (FileNotFoundError, OSError):
            return None

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="retsam-changes") as pool:
        return list(pool.map(safe, paths))

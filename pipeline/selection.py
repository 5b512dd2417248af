"""What a run will process: the listing, the anti-join against committed rows, and the rows asked to be redone.

Shared by `retsam run` and `retsam run --dry-run`, which stops here: it reads the listing and the output's image
ids, writes nothing and starts no Ray, so a cohort's next run can be sized before a cluster is paid for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.changes import Changes, find_changes
from pipeline.listing import Listing, list_inputs
from pipeline.output import Output
from pipeline.storage import filesystem


@dataclass(frozen=True)
class Redo:
    """Which already-processed images a run processes again (every other one is skipped)."""

    force: bool = False  # all of them
    model_hash_not: str | None = None  # those whose stored model hash differs from this
    retry_errors: bool = False  # those whose status is error
    reprocess_changed: str | None = None  # those whose file changed on storage: "size" or "sha256" (pipeline.changes)

    def to_dict(self) -> dict:
        return {"force": self.force, "model_hash_not": self.model_hash_not, "retry_errors": self.retry_errors,
                "reprocess_changed": self.reprocess_changed}


@dataclass
class Work:
    listing: Listing
    todo: pa.Table  # listing rows to process, sorted by image_id (cut to --limit)
    skipped: int  # listed images already in the output and not redone
    superseding: int  # rows of todo that replace a committed row
    changes: Changes
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """The dry run's answer: counts, and the first ids it would process."""
        return {"listed": len(self.listing), "other_files_not_listed": self.listing.other_files,
                "to_process": self.todo.num_rows, "skipped": self.skipped, "superseding": self.superseding,
                "changed_on_storage": len(self.changes), "changed_example": self.changes.image_ids[:10],
                "first_to_process": self.todo["image_id"].to_pylist()[:10], "timings": self.timings}


def plan_work(input_uri: str, out: Output, in_opts: dict, redo: Redo, limit: int | None,
              log: Callable[[str], None]) -> Work:
    """List INPUT, read the committed rows' ids (and what the change check needs) and select the images to process."""
    t = time.time()
    listing = list_inputs(input_uri, in_opts)
    timings = {"listing_s": time.time() - t}
    t = time.time()
    check = redo.reprocess_changed
    done = out.read_images(["image_id", "model_hash", "status", "file_bytes"] + (["file_sha256"] if check == "sha256" else []))
    changes = find_changes(listing.table, done, filesystem(listing.root, in_opts), check)
    todo, skipped, superseding = select_todo(listing, done, force=redo.force, model_hash_not=redo.model_hash_not,
                                             retry_errors=redo.retry_errors,
                                             changed=changes.image_ids if check else None)
    del done
    for line in changes.report(reprocessing=check is not None or redo.force):
        log(line)
    if limit is not None:
        todo = todo.slice(0, limit)
    timings["anti_join_s"] = time.time() - t
    return Work(listing, todo, skipped, superseding, changes, timings)


def select_todo(listing: Listing, done: pa.Table, *, force: bool = False, model_hash_not: str | None = None,
                retry_errors: bool = False, changed: list[str] | None = None) -> tuple[pa.Table, int, int]:
    """Anti-join of the listing against committed image ids (before any image bytes are read).

    Returns (todo, skipped, superseding): rows to process, rows already done, and rows that will replace an
    existing row (--force / --reprocess-model-hash-not / --retry-errors / --reprocess-changed: `changed` ids)."""
    if done.num_rows == 0:
        return listing.table, 0, 0
    keep = done
    if force:
        keep = done.slice(0, 0)
    else:
        if model_hash_not is not None:
            keep = keep.filter(pc.equal(pc.fill_null(keep["model_hash"], ""), model_hash_not))
        if retry_errors:
            keep = keep.filter(pc.not_equal(keep["status"], "error"))
        if changed:
            keep = keep.filter(pc.invert(pc.is_in(keep["image_id"], value_set=pa.array(changed, pa.string()))))
    keep_ids = keep.select(["image_id"])
    todo = listing.table.join(keep_ids, keys="image_id", join_type="left anti")
    in_listing_done = listing.table.num_rows - todo.num_rows
    superseding = todo.join(done.select(["image_id"]), keys="image_id", join_type="left semi").num_rows
    todo = todo.sort_by("image_id")
    return todo, in_listing_done, superseding

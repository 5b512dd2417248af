"""Turn INPUT (folder, glob, s3:// prefix, or CSV/Parquet manifest) into a listing table.

The listing is an Arrow table with `image_id` (stable across runs: the path relative to the input root),
`path` (full URI), `read_path` (the path as Ray's `path` column reports it: no scheme), `listed_bytes` (the file's
size as the listing reported it, at no extra request; null for manifests, which are not listed) and any manifest
columns, which pass through to the output. It is the only thing proportional to the cohort held by the driver, and it is
columnar (about 100 bytes per image).
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.storage import IMAGE_EXTENSIONS, filesystem, protocol_of, strip_protocol, to_uri, with_retries

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq", ".tsv")
RESERVED = {"image_id", "path", "read_path", "listed_bytes"}


@dataclass
class Listing:
    table: pa.Table  # image_id, path, read_path, <manifest columns>
    root_path: str  # path prefix (no scheme) that image ids are relative to
    protocol: str
    duplicates_dropped: int = 0
    other_files: int = 0  # files under a folder/glob without an image extension: not listed (say so, never silently)
    other_example: str | None = None

    def other_files_note(self) -> str:
        if not self.other_files:
            return ""
        return (f"; {self.other_files} other files not listed (no image extension, e.g. {self.other_example!r}: "
                "DICOM files without an extension go in through a manifest)")

    @property
    def root(self) -> str:
        return to_uri(self.protocol, self.root_path)

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.table.column_names if c not in RESERVED]

    def __len__(self) -> int:
        return self.table.num_rows


def is_manifest(uri: str) -> bool:
    return uri.lower().endswith(MANIFEST_SUFFIXES)


def image_id_for(read_path: str, root_path: str, protocol: str) -> str:
    """Stable id of an image: its path relative to the input root, else its full URI (same rule in every stage)."""
    if read_path.startswith(root_path):
        return read_path[len(root_path):]
    return to_uri(protocol, read_path)


def list_inputs(uri: str, storage_options: dict | None = None) -> Listing:
    proto = protocol_of(uri)
    fs = filesystem(uri, storage_options)
    if is_manifest(uri):
        return _from_manifest(uri, fs, proto)
    path = strip_protocol(uri)
    if any(ch in path for ch in "*?["):
        base = path.split("*")[0].split("?")[0].split("[")[0]
        base = base if base.endswith("/") else posixpath.dirname(base) + "/"
        found = {p: info for p, info in fs.glob(path, detail=True).items() if info.get("type") != "directory"}
        root = base
    else:
        if not fs.exists(path):
            raise FileNotFoundError(f"input not found: {uri}")
        if fs.isdir(path):
            root = path.rstrip("/") + "/"
            if proto == "file":  # streaming walk straight into Arrow: no per-file dicts for big folders
                table, others, example = _walk_local(root)
                return Listing(table, root, proto, other_files=others, other_example=example)
            found = fs.find(path, detail=True)
        else:
            found = {path: fs.info(path)}
            root = posixpath.dirname(path) + "/"
    found = {p: i for p, i in found.items() if not any(part.startswith((".", "_")) for part in p[len(root):].split("/"))}
    others = [p for p in found if not _is_image(p)]
    images = sorted(p for p in found if _is_image(p))
    ids = [image_id_for(p, root, proto) for p in images]
    table = pa.table({
        "image_id": pa.array(ids, pa.string()),
        "path": pa.array([to_uri(proto, p) for p in images], pa.string()),
        "read_path": pa.array(images, pa.string()),
        "listed_bytes": pa.array([_size_of(found[p]) for p in images], pa.int64()),
    })
    return Listing(table, root, proto, other_files=len(others),
                   other_example=posixpath.basename(min(others)) if others else None)


def _walk_local(root: str, chunk: int = 20000) -> tuple[pa.Table, int, str | None]:
    """Image files under a local folder (hidden and _-prefixed folders/files skipped), sorted by image_id; and how
    many other files it holds, with the first name of them."""
    import os

    parts: list[pa.Table] = []
    ids: list[str] = []
    paths: list[str] = []
    sizes: list[int | None] = []

    def flush() -> None:
        if paths:
            parts.append(pa.table({"image_id": pa.array(ids, pa.string()), "path": pa.array(paths, pa.string()),
                                   "read_path": pa.array(paths, pa.string()), "listed_bytes": pa.array(sizes, pa.int64())}))
            ids.clear()
            paths.clear()
            sizes.clear()

    others, example = 0, None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        for name in filenames:
            if name.startswith((".", "_")):
                continue
            if not _is_image(name):
                others += 1
                example = name if example is None else min(example, name)
                continue
            full = os.path.join(dirpath, name)
            paths.append(full)
            ids.append(full[len(root):])
            sizes.append(_local_size(full))
            if len(paths) >= chunk:
                flush()
    flush()
    if not parts:
        return pa.table({"image_id": pa.array([], pa.string()), "path": pa.array([], pa.string()),
                         "read_path": pa.array([], pa.string()), "listed_bytes": pa.array([], pa.int64())}), others, example
    t = pa.concat_tables(parts)
    return t.take(pc.sort_indices(t["image_id"])), others, example


def _local_size(path: str) -> int | None:
    import os

    try:
        return os.stat(path).st_size
    except OSError:  # a broken link: the reader reports it as an error row
        return None


def _size_of(info: dict) -> int | None:
    size = info.get("size")
    return int(size) if size is not None else None


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _from_manifest(uri: str, fs, proto: str) -> Listing:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    mpath = strip_protocol(uri)
    def read() -> bytes:
        with fs.open(mpath, "rb") as f:
            return f.read()

    data = with_retries(read)
    if uri.lower().endswith((".parquet", ".pq")):
        table = pq.read_table(io.BytesIO(data))
    else:
        delim = "\t" if uri.lower().endswith(".tsv") else ","
        # keep identifiers as strings (participant ids like 00123 must not become integers)
        probe = pacsv.read_csv(io.BytesIO(data), parse_options=pacsv.ParseOptions(delimiter=delim))
        types = {c: pa.string() for c in probe.column_names if c in ("path", "participant_id", "eye", "visit", "site", "device", "image_id")}
        table = pacsv.read_csv(io.BytesIO(data), parse_options=pacsv.ParseOptions(delimiter=delim),
                               convert_options=pacsv.ConvertOptions(column_types=types))
    if "path" not in table.column_names:
        raise ValueError(f"manifest {uri} has no 'path' column (columns: {', '.join(table.column_names)})")
    if "mm_per_px" in table.column_names:
        table = table.set_column(table.column_names.index("mm_per_px"), "mm_per_px", pc.cast(table["mm_per_px"], pa.float64()))
    for bad in ("image_id", "read_path", "listed_bytes"):
        if bad in table.column_names:
            table = table.rename_columns([f"manifest_{c}" if c == bad else c for c in table.column_names])
    root_dir = posixpath.dirname(mpath) + "/"
    raw = table["path"].to_pylist()
    full, read = [], []
    for p in raw:
        p = str(p).strip()
        if "://" in p:
            full.append(p)
            read.append(strip_protocol(p))
        elif p.startswith("/"):
            full.append(to_uri(proto, p.lstrip("/") if proto != "file" else p))
            read.append(p if proto == "file" else p.lstrip("/"))
        else:  # relative to the manifest's folder
            rp = posixpath.normpath(root_dir + p)
            full.append(to_uri(proto, rp))
            read.append(rp)
    protos = {protocol_of(p) for p in full}
    if len(protos) > 1:
        raise ValueError(f"manifest mixes storage schemes {sorted(protos)}: one run reads from one filesystem")
    proto = protos.pop() if protos else proto
    ids = [image_id_for(r, root_dir, proto) for r in read]
    meta = table.drop_columns(["path"])
    out = pa.table({"image_id": pa.array(ids, pa.string()), "path": pa.array(full, pa.string()),
                    "read_path": pa.array(read, pa.string()), "listed_bytes": pa.nulls(len(ids), pa.int64())})
    for name in meta.column_names:
        out = out.append_column(name, meta[name])
    before = out.num_rows
    out = _dedupe(out)
    return Listing(out, root_dir, proto, before - out.num_rows)


def _dedupe(table: pa.Table) -> pa.Table:
    idx = pa.table({"image_id": table["image_id"], "_i": pa.array(range(table.num_rows), pa.int64())})
    first = idx.group_by("image_id", use_threads=False).aggregate([("_i", "min")])["_i_min"]
    if len(first) == table.num_rows:
        return table
    return table.take(pc.take(first, pc.sort_indices(first)))  # first occurrence of each id, in manifest order

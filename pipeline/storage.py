"""Filesystems for local folders and object storage (fsspec), with options built once in the driver.

Ray workers may have been started before the driver's environment changed, so credentials/endpoints from the
standard AWS variables are resolved here and handed to tasks and actors explicitly (inside the filesystem object).
"""

from __future__ import annotations

import os
import time
from typing import Any

import fsspec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".jp2", ".gif", ".dcm", ".dicom")


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def strip_protocol(uri: str) -> str:
    """Path as the filesystem (and Ray's `path` column) sees it: `bucket/key` for S3, absolute path locally."""
    proto = protocol_of(uri)
    if proto == "file":
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return os.path.abspath(os.path.expanduser(path))
    return uri.split("://", 1)[1].rstrip("/") if uri.endswith("/") else uri.split("://", 1)[1]


def join_uri(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def to_uri(protocol: str, path: str) -> str:
    """Inverse of strip_protocol."""
    return path if protocol == "file" else f"{protocol}://{path}"


def env_storage_options(protocol: str) -> dict[str, Any]:
    """fsspec options from the standard AWS environment (AWS_ENDPOINT_URL, keys, AWS_PROFILE, region)."""
    if protocol not in ("s3", "s3a"):
        return {}
    opts: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    env = os.environ
    if env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"):
        client_kwargs["endpoint_url"] = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        opts["key"] = env["AWS_ACCESS_KEY_ID"]
        opts["secret"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            opts["token"] = env["AWS_SESSION_TOKEN"]
    elif env.get("AWS_PROFILE"):
        opts["profile"] = env["AWS_PROFILE"]
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    return opts


def resolve_storage_options(uri: str, explicit: dict[str, Any] | None = None) -> dict[str, Any]:
    """Environment defaults, overridden by explicit options (deep merge of client_kwargs)."""
    opts = env_storage_options(protocol_of(uri))
    for k, v in (explicit or {}).items():
        if k == "client_kwargs" and isinstance(v, dict):
            opts["client_kwargs"] = {**opts.get("client_kwargs", {}), **v}
        else:
            opts[k] = v
    return opts


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> fsspec.AbstractFileSystem:
    proto = protocol_of(uri)
    opts = resolve_storage_options(uri, storage_options)
    if proto == "file":
        return fsspec.filesystem("file")
    # a fresh instance: cached ones may carry stale credentials/endpoints from earlier calls
    return fsspec.filesystem(proto, skip_instance_cache=True, **opts)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying (throttling, timeouts, connection resets, 5xx)."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False
    text = f"{type(exc).__name__}: {exc}".lower()
    words = ("timeout", "timed out", "slowdown", "slow down", "throttl", "connection", "reset", "503", "500",
             "internal error", "service unavailable", "temporarily", "broken pipe")
    return isinstance(exc, (TimeoutError, ConnectionError)) or any(w in text for w in words)


def with_retries(fn, retries: int = 3, base_delay: float = 0.5):
    """Call fn(); retry transient errors with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt >= retries or not is_transient(exc):
                raise
            time.sleep(base_delay * (2**attempt))
    raise AssertionError("unreachable")

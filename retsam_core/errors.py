"""Per-image failures that become a row with a status, never an exception that kills a cohort run."""

from __future__ import annotations

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_UNGRADABLE = "ungradable"


class ImageError(Exception):
    """The input cannot be processed at all (status `error`): unreadable, empty, not an image, too small/huge."""

    status = STATUS_ERROR


class UngradableImage(ImageError):
    """The input decodes but holds no usable fundus (status `ungradable`): e.g. no field of view found."""

    status = STATUS_UNGRADABLE

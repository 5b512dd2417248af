"""Decode cost per photograph on the segmentation actor's path: a JPEG file against the same photograph as a JPEG
Baseline DICOM (decoded through its JPEG stream, with DCT draft scaling), and against decoding that DICOM in full
through pydicom, which the draft path replaces. Medians of interleaved repeats; ratios within this run.

    python benchmarks/bench_decode.py [--side 3000] [--target 1024] [--repeats 9]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import cv2
import numpy as np
import pydicom
import skimage.data
from PIL import Image

from pipeline.dicom_writer import dicom_photograph
from retsam_core.image_io import DecodeLimits, decode_image


def photograph(side: int) -> np.ndarray:
    """The real photograph at `side` px, in a 4:3 camera frame (black margins), like a 12 MP fundus camera's."""
    rgb = cv2.resize(skimage.data.retina(), (side, side), interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(rgb, 0, 0, side // 6, side // 6, cv2.BORDER_CONSTANT, value=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=3000)
    ap.add_argument("--target", type=int, default=1024, help="canvas side the decoder may draft-scale towards")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    rgb = photograph(args.side)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
    jpeg, dicom = buf.getvalue(), dicom_photograph(rgb, compression="jpeg")
    limits = DecodeLimits(target_side=args.target)
    cases = {
        "JPEG file, decode_image": lambda: decode_image(jpeg, limits),
        "JPEG Baseline DICOM, decode_image": lambda: decode_image(dicom, limits),
        "JPEG Baseline DICOM, pydicom full decode": lambda: pydicom.dcmread(io.BytesIO(dicom)).pixel_array,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):  # interleaved, so background load falls on every case alike
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    h, w = rgb.shape[:2]
    print(f"{w}x{h} photograph, target side {args.target}, {args.repeats} repeats (median ms, ratio to the JPEG file)")
    base = statistics.median(times["JPEG file, decode_image"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<42} {med * 1000:8.1f} ms   {med / base:5.2f}x")


if __name__ == "__main__":
    main()

"""Fixtures for the pipeline tests: a small demo cohort (real fundus photograph variants + every bad file kind)
and a fast configuration (256 px canvas) so that the whole suite runs in a few minutes on two cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.demo import EXPECTED_BAD, EXPECTED_WARN, build_demo

SIDE = 384  # base photograph side for tests (the demo uses the full 1411 px)
CANVAS = 256


def fast_config(**kw) -> PipelineConfig:
    base = dict(canvas_size=CANVAS, segment_actors=1, quantify_actors=1, segment_batch_size=4, quantify_batch_size=8,
                shard_size=1000, segmenter="classical", qc_overlays="none")
    base.update(kw)
    return PipelineConfig(**base)


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory):
    """Demo cohort with the 8000x6000 file, built once per session."""
    return build_demo(tmp_path_factory.mktemp("demo"), side=SIDE, huge=True)


@pytest.fixture(scope="session")
def demo_run(demo_cohort, ray_local, tmp_path_factory):
    """One full run of the demo manifest into a local folder (shared by the read-only tests)."""
    from pipeline.runner import run_cohort

    out = tmp_path_factory.mktemp("demo_out") / "results"
    # the demo manifest plus one row naming a file that does not exist
    manifest = demo_cohort.input_dir / "manifest_plus_missing.csv"
    text = demo_cohort.manifest.read_text()
    manifest.write_text(text + "does_not_exist.jpg,P999,OD,baseline,demo-site-A,skimage-retina,\n")
    summary = run_cohort(str(manifest), str(out), fast_config(segment_actors=2, shard_size=12, qc_overlays="sample",
                                                                  qc_sample_size=3), progress=False,
                         log=lambda m: None)
    return out, summary


def copy_images(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        (dst / n).write_bytes((src / n).read_bytes())
    return dst


__all__ = ["EXPECTED_BAD", "EXPECTED_WARN", "fast_config", "demo_cohort", "demo_run", "copy_images", "SIDE", "CANVAS"]

"""The held-out-camera benchmark's bookkeeping, on real test images with the shipped weights and the classical
segmenter: the matrix holds what `evaluate_items` measures, and the in-domain vs cross-camera ratio is read from
the right cells."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from retsam_core.model.loading import default_weights_path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_cross_camera", ROOT / "benchmarks" / "bench_cross_camera.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cross_camera_matrix_and_ratio(shared_data, monkeypatch):
    weights = default_weights_path()
    if weights is None:
        pytest.skip("no shipped weights")
    monkeypatch.setenv("RETSAM_DATA", str(shared_data))
    bench = _bench()
    other = str(ROOT / "retsam_core" / "weights" / "retsam-small.safetensors")
    out = bench.cross_camera("vessel", {"chase_db1": str(weights), "hrf_av": other}, ["classical", f"again={weights}"], limit=1)
    m = out["matrix"]
    assert set(m) == {"chase_db1", "hrf_av", "classical", "again"}
    assert m["again"] == m["chase_db1"]  # a named reference is scored like any model (same weights, same figures)
    for label in m:
        for ds in ("chase_db1", "hrf_av"):
            assert m[label][ds]["images"] == 1 and 0.3 < m[label][ds]["dsc"] <= 1.0
    # the same weights under both labels: in-domain and cross-camera cells are the same measurement
    for ds in ("chase_db1", "hrf_av"):
        s = out["shift"][ds]
        assert s["in_domain_dsc"] == m[ds][ds]["dsc"] and s["cross_camera_dsc"] == m[s["cross_trained_on"]][ds]["dsc"]
        assert s["ratio_cross_over_in"] == pytest.approx(1.0) and s["drop_points"] == 0
    assert m["chase_db1"]["chase_db1"]["dsc"] > m["classical"]["chase_db1"]["dsc"]  # the learned model beats classical
    assert "cldice" in m["classical"]["hrf_av"]
    table = bench.markdown(out)
    assert f"**{m['chase_db1']['chase_db1']['dsc']:.3f}**" in table and "trained on hrf_av only" in table

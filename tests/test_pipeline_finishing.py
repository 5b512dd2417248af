"""The default (learned) segmenter through the real pipeline: its network runs on the segmentation actors, its
host-side finishing (A/V separation on the skeleton, lesion post-processing, the classical fovea) on the CPU
actors. A cohort run must store exactly the masks `segment()` gives in one process."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa

from pipeline.runner import run_cohort
from pipeline.scan import scan
from pipeline.stages import SegmentStage
from retsam_core.mask_codec import decode_mask
from tests.pipeline_fixtures import copy_images, fast_config

NAMES = ["retina_q75.jpg", "retina_hflip.jpg"]


def test_cohort_run_stores_the_masks_segment_gives(demo_cohort, tmp_path, ray_local):
    src = copy_images(demo_cohort.input_dir, tmp_path / "in", NAMES)
    out = tmp_path / "out"
    cfg = fast_config(segmenter="default", canvas_size=512)
    summary = run_cohort(str(src), str(out), cfg, progress=False, log=lambda m: None)
    assert summary["processed"] == len(NAMES)
    frames = scan(str(out))
    images = frames["images"].collect()
    assert images["status"].to_list() == ["ok"] * len(NAMES), images.select("status", "error")
    stored = {r["image_id"]: r for r in frames["masks"].collect().to_dicts()}

    record = json.loads(next((out / "_runs").glob("*.json")).read_text())
    finisher = record["segmenter"]["finisher"]
    assert finisher["classical_targets"] == ["fovea"] and finisher["av_classifier"] is not None

    # the same decode and canvas as the segmentation actor, then the whole segmenter in this process
    stage = SegmentStage(cfg.to_dict(), None, fsspec.filesystem("file"), f"{src}/", "file")
    provided = set(stage.segmenter.info.provides)
    assert {"artery", "vein", "fovea"} <= provided
    compared = 0
    for name in NAMES:
        row, pre = stage._prepare(str(src / name), (src / name).read_bytes())
        expected = stage.segmenter.segment(pre.image[None], pre.fov[None])[0]
        got = stored[row["image_id"]]
        for t in provided:
            mask = decode_mask(got[f"mask_{t}"]) if got[f"mask_{t}"] is not None else None
            assert mask is not None and np.array_equal(mask, expected[t]), (name, t)
            compared += 1
        artery, vein = decode_mask(got["mask_artery"]), decode_mask(got["mask_vein"])
        assert artery.any() and vein.any() and not (artery & vein).any()  # separated, not two overlapping maps
        assert decode_mask(got["mask_fovea"]).any()
    assert compared == len(NAMES) * len(provided)


def test_segmentation_actor_leaves_the_finishing_to_the_cpu_actors(demo_cohort, tmp_path):
    """The segmentation actor's row carries overlapping artery/vein maps, their probabilities on the vessel union
    and no fovea: the skeleton work and the classical locator are not done there."""
    from retsam_core.mask_codec import decode_on_support

    paths = [demo_cohort.input_dir / n for n in NAMES]
    cfg = fast_config(segmenter="default", canvas_size=512, decode_threads=2)  # a multi-CPU actor encodes in threads
    stage = SegmentStage(cfg.to_dict(), None, fsspec.filesystem("file"), str(demo_cohort.input_dir), "file")
    out = stage(pa.table({"path": [str(p) for p in paths], "bytes": [p.read_bytes() for p in paths]})).to_pylist()
    assert [r["status"] for r in out] == ["ok", "ok"] and out[0]["mask_vessel"] != out[1]["mask_vessel"]
    row = out[0]
    assert row["masks_pending"] is True
    assert row["mask_fovea"] is None and row["canvas_rgb"] is not None
    artery, vein = decode_mask(row["mask_artery"]), decode_mask(row["mask_vein"])
    p_artery = decode_on_support(row["evidence_p_artery"], artery | vein)  # sent on the vessel union only
    assert (artery & vein).any()  # both thresholds pass on some pixels until the vote splits them
    assert p_artery[artery].mean() > 127 > p_artery[vein & ~artery].mean()
    assert len(row["canvas_rgb"]) == 512 * 512 * 3



def test_finishing_on_a_cpu_actor_does_not_import_torch(tmp_path):
    """The CPU actors finish masks with the card's A/V classifier and the classical fovea: that must not pull in
    torch (hundreds of MB per actor). Checked in a fresh interpreter on the shipped card and a real photograph."""
    import subprocess
    import sys

    from retsam_core.model.loading import default_weights_path

    card = default_weights_path().with_suffix(".json")
    code = f"""
import json, sys
import numpy as np, skimage.data
from retsam_core.finishing import Finisher, PendingMasks, quantise
from retsam_core.preprocess import preprocess
card = json.loads(open({str(card)!r}).read())
fin = Finisher(av_classifier=card["av_segment_classifier"]["classifier"], postprocess=card.get("postprocess", {{}}),
               classical_targets=("fovea",))
pre = preprocess(skimage.data.retina(), 512)
g = pre.image[..., 1].astype(np.float32)
vessel = (g < np.percentile(g[pre.fov], 12)) & pre.fov
disc = np.zeros_like(vessel); disc[230:290, 80:140] = True
p = np.where(np.arange(512)[None, :] % 64 < 32, 0.8, 0.2) * np.ones((512, 1))
masks = fin(PendingMasks({{"artery": vessel, "vein": vessel, "optic_disc": disc}},
                         {{"p_artery": quantise(p, vessel), "p_vein": quantise(1 - p, vessel)}}), pre.image, pre.fov)
assert masks["artery"].any() and masks["vein"].any() and not (masks["artery"] & masks["vein"]).any()
assert masks["fovea"].any()
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"

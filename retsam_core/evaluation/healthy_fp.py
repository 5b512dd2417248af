"""False lesions on eyes without lesions: the check that lesion Dice on a DR-only test set (IDRiD) cannot make.

A lesion head that fires on healthy eyes would report lesion counts as if they were measurements. We run the
learned lesion heads on the test images of healthy eyes we have (HRF-AV `*_h` test images and CHASE_DB1 test
images, children without retinopathy, plus scikit-image's normal eye from a camera no training set used) and
count predicted lesion components; the result goes into the model card (`metrics.healthy_false_positives`) and
`retsam_core.hybrid` withholds heads above its bar.

    python -m retsam_core.evaluation.healthy_fp --card retsam_core/weights/retsam-small.json [--data-root DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from retsam_core.datasets.cache import canvas_from_bytes
from retsam_core.datasets.readers import get_reader
from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG
from retsam_core.targets import LESION_TARGETS


UNSEEN_CAMERA_FIELD_ANGLE = DEFAULT_FIELD_ANGLE_DEG  # not known for the Wikimedia photograph


def healthy_images(data_root: Path, split: str = "test", calibration_only: bool = False) -> list[tuple[Path, float]]:
    """Eyes without retinopathy in `split`, as the dataset readers know them (`Reader.healthy`): HRF-AV `_h`
    images and CHASE_DB1 images (children), each with its camera's field angle (an angular-scale model's canvas).
    `calibration_only`: the calibration half of them (`Reader.calibration_eye`)."""
    out = []
    for name in ("hrf_av", "chase_db1"):
        r = get_reader(name, data_root)
        out += [(r.image_path(split, i), r.field_angle_deg) for i in r.ids(split)
                if r.healthy(i) and (r.calibration_eye(i) or not calibration_only)]
    return out


def unseen_camera_healthy_eyes() -> dict[str, bytes]:
    """Normal eyes from a camera and population no training set comes from: scikit-image's bundled fundus
    photograph (Wikimedia "Fundus photograph of normal left eye", CC0), PNG-encoded for the pipeline's decoder."""
    from skimage import data

    _, png = cv2.imencode(".png", cv2.cvtColor(data.retina()[..., :3], cv2.COLOR_RGB2BGR))
    return {"skimage_retina_normal_left_eye": png.tobytes()}


def count_false_lesions(segmenter, images: dict[str, bytes], canvas: int = 1024,
                        field_angles: dict[str, float] | None = None) -> dict[str, dict]:
    """Per lesion target the segmenter provides: mean and max predicted components per healthy image, and the
    count on each image (decoded and preprocessed as the pipeline does, on the canvas the segmenter asks for given
    the image's field angle in `field_angles`, else the pipeline's default angle)."""
    targets = [t for t in LESION_TARGETS if t in segmenter.info.provides]
    counts: dict[str, dict[str, int]] = {t: {} for t in targets}
    for name, data in images.items():
        angle = (field_angles or {}).get(name, UNSEEN_CAMERA_FIELD_ANGLE)
        p = canvas_from_bytes(data, segmenter.info.canvas_side(angle, canvas))
        masks = segmenter.segment(p.image[None], p.fov[None])[0]
        for t in targets:
            counts[t][name] = cv2.connectedComponents(masks[t].astype(np.uint8))[0] - 1
    return {
        t: {"images": len(v), "mean_components": float(np.mean(list(v.values()))),
            "max_components": int(max(v.values())), "per_image": v}
        for t, v in counts.items()
    }


def main(argv: list[str] | None = None) -> None:
    from retsam_core.model.loading import LearnedSegmenter

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--card", required=True, help="model card JSON beside the .safetensors weights")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    a = ap.parse_args(argv)
    card_path = Path(a.card)
    seg = LearnedSegmenter.from_uri(str(card_path.with_suffix(".safetensors")))
    eyes = healthy_images(Path(a.data_root), "test")
    images = {p.name: p.read_bytes() for p, _ in eyes}
    unseen = unseen_camera_healthy_eyes()
    result = count_false_lesions(seg, images | unseen, field_angles={p.name: angle for p, angle in eyes})
    card = json.loads(card_path.read_text())
    card.setdefault("metrics", {})["healthy_false_positives"] = {
        "images": list(images) + list(unseen),
        "unseen_camera_images": list(unseen),
        "per_target": result,
    }
    card_path.write_text(json.dumps(card, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

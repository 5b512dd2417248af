"""`retsam evaluate`: metrics of a segmenter on a dataset test split or on any image/mask folder pair.

Examples:
  retsam evaluate --dataset chase_db1 --split test --out out/eval/chase
  retsam evaluate --dataset idrid --segmenter classical --out out/eval/idrid-classical
  retsam evaluate --images DIR --masks DIR --target vessel --out out/eval/mine
  retsam evaluate --dataset chase_db1 --resolution native --out out/eval/chase-native
Writes OUT/metrics.json (per image + aggregate) and OUT/metrics.md.
"""

from __future__ import annotations

import json
import sys

from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG
from retsam_core.subcommand import subcommand


def handler(a) -> int:
    from retsam_core.evaluation.evaluate import evaluate_dataset, evaluate_items, folder_items
    from retsam_core.segmenter import load_segmenter
    from retsam_core.targets import check_target

    seg = load_segmenter(a.segmenter, device=a.device)
    log = (lambda m: None) if a.quiet else (lambda m: print(m, file=sys.stderr))
    if a.images or a.masks:
        if not (a.images and a.masks and a.target):
            raise SystemExit("--images, --masks and --target go together")
        check_target(a.target)
        side = seg.info.canvas_side(a.field_angle_deg, a.size)  # an angular-scale model: its canvas for this camera
        res = evaluate_items(seg, folder_items(a.images, a.masks, a.target, a.size, model_side=side,
                                                  resolution=a.resolution), [a.target], a.out,
                             title=f"{a.images} vs {a.masks}", log=log)
    elif a.dataset:
        res = evaluate_dataset(seg, a.dataset, a.split, a.out, a.size, a.cache_dir, a.data_root, a.limit, log=log,
                               resolution=a.resolution)
    else:
        raise SystemExit("give --dataset NAME or --images/--masks/--target")
    print(json.dumps(res["aggregate"], indent=1))
    return 0


def add_arguments(p):
    p.add_argument("--dataset", help="chase_db1 | hrf_av | drishti_gs1 | idrid")
    p.add_argument("--split", default="test")
    p.add_argument("--images", help="folder of images (paired with --masks by file stem)")
    p.add_argument("--masks", help="folder of binary masks (> 0 or >= 128 = structure)")
    p.add_argument("--target", help="target the masks annotate (e.g. vessel)")
    p.add_argument("--segmenter", default="default", help="classical | default | learned | path/URI of .safetensors; '+flip' after a learned one: flip TTA, '+bf16': bf16 on the CPU")
    p.add_argument("--device")
    p.add_argument("--out", required=True, help="output folder for metrics.json / metrics.md")
    p.add_argument("--size", type=int, default=1024, help="canvas size of the model's input (pipeline default 1024)")
    p.add_argument("--resolution", choices=("canvas", "native"), default="canvas",
                   help="score on the canvas (the model card's protocol) or at the photograph's own resolution "
                        "against the original label files (masks mapped back as `retsam segment` writes them)")
    p.add_argument("--field-angle-deg", type=float, default=DEFAULT_FIELD_ANGLE_DEG,
                   help="--images mode: the camera's field angle (an angular-scale model cuts its canvas from it; "
                        "a --dataset has its own)")
    p.add_argument("--cache-dir", default="runs/cache")
    p.add_argument("--data-root")
    p.add_argument("--limit", type=int)
    p.add_argument("--quiet", action="store_true")


register, main = subcommand("evaluate", "evaluate a segmenter (DSC, IoU, sens/spec, clDice, AUPR)", __doc__, add_arguments, handler)


if __name__ == "__main__":
    raise SystemExit(main())

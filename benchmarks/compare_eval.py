"""Two `retsam evaluate` outputs of the same images side by side: each target's mean DSC (lesion-present DSC for
lesions, as the goals count them), the difference in points, and whether it stays within a tolerance.

    python benchmarks/compare_eval.py RUNS_ROOT BASE OTHER [--tolerance 0.3] [--json OUT]

RUNS_ROOT/<dataset>/<BASE>/metrics.json against RUNS_ROOT/<dataset>/<OTHER>/metrics.json for every dataset folder
that has both (e.g. the segmenters `default` and `default+bf16`: docs/model_eval/cpu_bf16/). Accuracy only: the
evaluations' own seconds per image are not a speed measure on a shared machine (benchmarks/bench_model.py is).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def headline(aggregate: dict) -> dict[str, float]:
    """Target -> the DSC the goals count: lesion-present DSC where the metrics have it, else DSC."""
    return {t: float(m.get("dsc_present", m["dsc"])) for t, m in aggregate.items() if "dsc" in m}


def compare(root: Path, base: str, other: str, tolerance_points: float) -> dict:
    rows = []
    for dataset in sorted(p.name for p in root.iterdir() if p.is_dir()):
        a, b = root / dataset / base / "metrics.json", root / dataset / other / "metrics.json"
        if not (a.exists() and b.exists()):
            continue
        ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
        ha, hb = headline(ma["aggregate"]), headline(mb["aggregate"])
        for target in ha:
            if target in hb:
                delta = (hb[target] - ha[target]) * 100
                rows.append({"dataset": dataset, "target": target, base: round(ha[target], 4), other: round(hb[target], 4),
                             "delta_points": round(delta, 3), "within": abs(delta) <= tolerance_points})
    return {"base": base, "other": other, "tolerance_points": tolerance_points, "rows": rows,
            "all_within": bool(rows) and all(r["within"] for r in rows),
            "largest_change_points": max((abs(r["delta_points"]) for r in rows), default=None)}


def table(result: dict) -> str:
    base, other = result["base"], result["other"]
    lines = [f"| dataset | target | {base} | {other} | Δ points |", "|---|---|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['dataset']} | {r['target']} | {r[base]:.4f} | {r[other]:.4f} | {r['delta_points']:+.2f} |")
    verdict = "within" if result["all_within"] else "NOT within"
    lines.append(f"\nEvery target {verdict} ±{result['tolerance_points']} points "
                 f"(largest change {result['largest_change_points']} points).")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("base")
    ap.add_argument("other")
    ap.add_argument("--tolerance", type=float, default=0.3, help="points of DSC")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    result = compare(a.root, a.base, a.other, a.tolerance)
    print(table(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

"""The figures a candidate's ship rule reads, gathered from `finalize_candidate.sh`'s output folder into one
`rule_figures.json` (and printed), so that a rule is checked against one file rather than five."""

import json
import sys
from pathlib import Path

IDRID_LESIONS = ("microaneurysm", "hemorrhage", "hard_exudate", "soft_exudate")  # the MA/HE/EX/SE of the keys

out = Path(sys.argv[1])
s = json.loads((out / "summary.json").read_text())["learned"]
fp = json.loads((out / "healthy_fp.json").read_text())
av = json.loads((out / "av_calibre.json").read_text())["summary"]
flip = {ds: json.loads((out / "flip_tta" / ds / "metrics.json").read_text())["aggregate"] for ds in ("chase_db1", "hrf_av")}
row = {
    "chase_db1 vessel": s["chase_db1"]["vessel"]["dsc"], "chase_db1 vessel +flip": flip["chase_db1"]["vessel"]["dsc"],
    "hrf_av vessel/artery/vein": [s["hrf_av"][t]["dsc"] for t in ("vessel", "artery", "vein")],
    "hrf_av artery/vein +flip": [flip["hrf_av"][t]["dsc"] for t in ("artery", "vein")],
    "drishti disc/cup": [s["drishti_gs1"][t]["dsc"] for t in ("optic_disc", "optic_cup")],
    "idrid lesion-present MA/HE/EX/SE": [s["idrid"][t].get("dsc_present") for t in IDRID_LESIONS],
    "idrid aupr MA/HE/EX/SE": [s["idrid"][t].get("aupr") for t in IDRID_LESIONS],
    "healthy false components per eye": {t: v["mean_components"] for t, v in fp.items()},
    **{k: av.get(k) for k in ("avr_knudtson_zone_b", "crae_knudtson_um_zone_b", "crve_knudtson_um_zone_b")},
}
(out / "rule_figures.json").write_text(json.dumps(row, indent=1))
print(json.dumps(row, indent=1))

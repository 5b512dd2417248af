"""The biomarker catalogue: one table, one entry per output column.

Everything downstream is generated from it (Arrow schemas, docs/biomarkers.md, the null-filling in api.py), so a
column exists exactly when it is listed here. Names follow `<metric>_<layer>_<region>` where they vary by layer
(all / artery / vein) and region (retina / zone_b / zone_c); physical and pixel variants sit side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from retsam_core.targets import LESION_TARGETS

LAYERS: tuple[str, ...] = ("all", "artery", "vein")
REGIONS: tuple[str, ...] = ("retina", "zone_b", "zone_c")
LESION_QUADRANTS: tuple[str, ...] = ("superotemporal", "superonasal", "inferotemporal", "inferonasal")
ATROPHY_TARGETS: tuple[str, ...] = ("peripapillary_atrophy", "diffuse_atrophy", "patchy_atrophy")
ISNT_SECTORS: tuple[str, ...] = ("inferior", "superior", "nasal", "temporal")
# lesion size bins by component area in mm^2: small < 0.01 (about a 110 um disc), medium < 0.1, large >= 0.1
SIZE_BINS_MM2: tuple[tuple[str, float, float], ...] = (
    ("small", 0.0, 0.01),
    ("medium", 0.01, 0.1),
    ("large", 0.1, float("inf")),
)

_ARROW = {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}

REF_KNUDTSON = "Knudtson et al., Curr Eye Res 2003;27:143-149"
REF_PARR = "Parr & Spears 1974; Hubbard et al., Ophthalmology 1999;106:2269-2280"
REF_SIVA = "Cheung et al., Ophthalmology 2011 (SIVA zones and measures)"
REF_GRISAN = "Grisan, Foracchia, Ruggeri, IEEE TMI 2008;27:310-319"
REF_HART = "Hart et al., Int J Med Inform 1999;53:239-252 (curvature tortuosity)"
REF_FD = "Liew et al., Ophthalmology 2008 (box-counting FD); Stosic & Stosic, IEEE TMI 2006 (multifractal)"
REF_MURRAY = "Murray, PNAS 1926; Zamir, J Gen Physiol 1976 (branching)"
REF_ETDRS = "ETDRS Report 10, Ophthalmology 1991 (grid)"
REF_ISNT = "Jonas et al., Surv Ophthalmol 1999 (ISNT rule)"
REF_RETSAM = "RetSAM (arXiv 2602.07012) quantification, extended"


@dataclass(frozen=True)
class Column:
    name: str
    family: str
    layer: str | None
    region: str | None
    unit: str
    dtype: str  # float64 | int64 | bool | string
    definition: str
    reference: str = ""


def _build() -> list[Column]:
    cols: list[Column] = []

    def add(name, family, unit, dtype, definition, reference="", layer=None, region=None):
        cols.append(Column(name, family, layer, region, unit, dtype, definition, reference))

    # --- scale and layout ---------------------------------------------------------------------------------------
    add("scale_mm_per_px", "layout", "mm/px", "float64", "pixel size of the mask grid")
    add("scale_source", "layout", "", "string",
        "how the pixel size was obtained: manifest, dicom (the file's PixelSpacing), fov_estimate (field of view "
        "under the configured camera field angle), dicom_fov_estimate (under the DICOM header's field of view), "
        "disc_estimate, none")
    add("fov_area_px", "layout", "px^2", "int64", "visible retina (field of view) area in pixels")
    add("fov_area_mm2", "layout", "mm^2", "float64", "visible retina area")
    add("fov_centre_x_px", "layout", "px", "float64", "field-of-view centroid, column")
    add("fov_centre_y_px", "layout", "px", "float64", "field-of-view centroid, row")
    add("fov_radius_px", "layout", "px", "float64", "equivalent radius of the field of view sqrt(area/pi)")
    add("disc_centre_x_px", "layout", "px", "float64", "optic disc centroid (largest disc component), column")
    add("disc_centre_y_px", "layout", "px", "float64", "optic disc centroid, row")
    add("disc_radius_px", "layout", "px", "float64", "equivalent disc radius r = sqrt(area/pi); zones are multiples of r")
    add("fovea_centre_x_px", "layout", "px", "float64", "fovea centre: centroid of the largest fovea component, column")
    add("fovea_centre_y_px", "layout", "px", "float64", "fovea centre, row")
    add("disc_fovea_distance_px", "layout", "px", "float64", "distance between disc centre and fovea centre")
    add("disc_fovea_distance_mm", "layout", "mm", "float64", "disc-fovea distance (adult mean about 4.5-4.8 mm)")
    add("disc_fovea_distance_dd", "layout", "DD", "float64", "disc-fovea distance in disc diameters (2r)")
    add("disc_fovea_angle_deg", "layout", "deg", "float64",
        "elevation of the fovea seen from the disc, atan2(disc_y - fovea_y, |fovea_x - disc_x|); negative when the "
        "fovea lies below the disc (typical); mirror-invariant")
    add("laterality", "layout", "", "string",
        "right / left eye: the disc lies nasal to the fovea, i.e. right of it in a right-eye photograph; from the "
        "disc position in the field when there is no fovea and the disc is off-centre (macula-centred assumption)")
    add("laterality_source", "layout", "", "string",
        "given (by the caller of compute_biomarkers; the pipeline infers it and keeps the manifest's eye and the "
        "DICOM header's beside it), disc_fovea or disc_position")
    add("field_type", "layout", "", "string",
        "disc_centred or macula_centred: which of disc / fovea is nearer the field centre; with a disc only, "
        "disc-centred when the disc lies within 0.3 field radii of the centre")

    # --- density and length -------------------------------------------------------------------------------------
    for layer in LAYERS:
        for region in REGIONS:
            kw = dict(layer=layer, region=region)
            sfx = f"{layer}_{region}"
            add(f"vessel_density_{sfx}", "density", "ratio", "float64",
                f"{layer} vessel pixels / retina pixels in {region} (never the canvas); specks under min_component_px "
                "are dropped as segmentation noise", **kw)
            add(f"vessel_length_px_{sfx}", "density", "px", "float64",
                f"{layer} centreline length (smoothed skeleton paths) in {region}", **kw)
            add(f"vessel_length_mm_{sfx}", "density", "mm", "float64", f"{layer} centreline length in {region}", **kw)
            add(f"length_density_{sfx}", "density", "mm/mm^2", "float64",
                f"{layer} centreline length (mm) / retina area (mm^2) in {region}", **kw)

    # --- fractal dimension --------------------------------------------------------------------------------------
    for layer in LAYERS:
        for region in ("retina", "zone_c"):
            kw = dict(layer=layer, region=region)
            sfx = f"{layer}_{region}"
            add(f"fd_box_skeleton_{sfx}", "fractal", "", "float64",
                "box-counting dimension of the centreline (skeleton, SIVA convention), boxes 2 px to 1/4 ROI",
                REF_FD, **kw)
            add(f"fd_box_mask_{sfx}", "fractal", "", "float64",
                "box-counting dimension of the binary vessel mask, boxes 2 px to 1/4 ROI", REF_FD, **kw)
        for q in ("d0", "d1", "d2"):
            add(f"fd_multifractal_{q}_{layer}_retina", "fractal", "", "float64",
                f"Renyi dimension {q.upper()} of the vessel mask mass (p_i = mask pixels in box i / total)",
                REF_FD, layer=layer, region="retina")

    # --- tortuosity ---------------------------------------------------------------------------------------------
    for layer in LAYERS:
        for region in ("retina", "zone_c"):
            kw = dict(layer=layer, region=region)
            sfx = f"{layer}_{region}"
            sel = f"{layer} segments whose arc midpoint lies in {region} and at least min_segment_px long"
            add(f"tortuosity_distance_{sfx}", "tortuosity", "ratio", "float64",
                f"length-weighted mean arc/chord over {sel}", REF_HART, **kw)
            add(f"tortuosity_distance_median_{sfx}", "tortuosity", "ratio", "float64",
                f"median arc/chord over {sel}", REF_HART, **kw)
            add(f"tortuosity_curvature_per_mm2_{sfx}", "tortuosity", "1/mm^2", "float64",
                f"length-weighted mean of (integral k^2 ds)/L over {sel}", REF_HART, **kw)
            add(f"tortuosity_curvature_per_px2_{sfx}", "tortuosity", "1/px^2", "float64",
                "as tortuosity_curvature_per_mm2 on the pixel grid", REF_HART, **kw)
            add(f"tortuosity_density_per_mm_{sfx}", "tortuosity", "1/mm", "float64",
                f"length-weighted mean tortuosity density (n-1)/n * (1/L) * sum(L_i/S_i - 1) over {sel}",
                REF_GRISAN, **kw)

    # --- calibre ------------------------------------------------------------------------------------------------
    for region in ("zone_b", "zone_c"):
        kw = dict(region=region)
        # Config.calibre_circles (5) and calibre.zone_circle_radii; not imported: context imports this module
        circ = ("segments crossing each of 5 circles evenly spaced across the zone (median over the circles; "
                "2.1r-2.9r for zone B, 2.3r-4.7r for zone C)")
        for method, ref in (("knudtson", REF_KNUDTSON), ("parr_hubbard", REF_PARR)):
            for kind, layer in (("crae", "artery"), ("crve", "vein")):
                add(f"{kind}_{method}_um_{region}", "calibre", "um", "float64",
                    f"{kind.upper()} by {method} recursive pairing of the six widest {layer} {circ}", ref,
                    layer=layer, **kw)
                if method == "knudtson":
                    add(f"{kind}_{method}_px_{region}", "calibre", "px", "float64",
                        f"{kind.upper()} Knudtson in pixels (formula is unit-free)", ref, layer=layer, **kw)
            add(f"avr_{method}_{region}", "calibre", "ratio", "float64", f"CRAE / CRVE ({method})", ref, **kw)
        for layer in ("artery", "vein"):
            add(f"calibre_n_vessels_{layer}_{region}", "calibre", "count", "int64",
                f"{layer} {circ} with a measurable width", layer=layer, **kw)
    for layer in LAYERS:
        for region in REGIONS:
            kw = dict(layer=layer, region=region)
            sfx = f"{layer}_{region}"
            defn = f"over all centreline points of {layer} vessels in {region}, width = 2*DT - 1 px"
            add(f"width_mean_px_{sfx}", "calibre", "px", "float64", f"mean width {defn}", **kw)
            add(f"width_median_px_{sfx}", "calibre", "px", "float64", f"median width {defn}", **kw)
            add(f"width_mean_um_{sfx}", "calibre", "um", "float64", f"mean width {defn}", **kw)
            add(f"width_median_um_{sfx}", "calibre", "um", "float64", f"median width {defn}", **kw)

    # --- topology and branching ---------------------------------------------------------------------------------
    for layer in LAYERS:
        for region in ("retina", "zone_c"):
            kw = dict(layer=layer, region=region)
            sfx = f"{layer}_{region}"
            add(f"n_segments_{sfx}", "topology", "count", "int64",
                f"centreline segments between junctions/ends (spurs pruned) with arc midpoint in {region}", **kw)
            add(f"n_bifurcations_{sfx}", "topology", "count", "int64",
                f"junction nodes of degree 3 in {region} (adjacent junction pixels merged)", **kw)
            add(f"n_crossings_{sfx}", "topology", "count", "int64", f"junction nodes of degree >= 4 in {region}", **kw)
            add(f"n_endpoints_{sfx}", "topology", "count", "int64", f"centreline ends (degree 1) in {region}", **kw)
            add(f"branching_angle_mean_deg_{sfx}", "topology", "deg", "float64",
                "mean angle between the two daughters at bifurcations (daughters = the pair of branches with the "
                "smallest angle, parent = the third), directions taken along each branch from one parent width to "
                "0.08 mm further", REF_MURRAY, **kw)
            add(f"branching_angle_median_deg_{sfx}", "topology", "deg", "float64", "median branching angle",
                REF_MURRAY, **kw)
            add(f"branching_coefficient_median_{sfx}", "topology", "ratio", "float64",
                "median (d1^2 + d2^2) / d0^2 at bifurcations (d = normal-profile widths just beyond the junction)", REF_MURRAY, **kw)
            add(f"junction_exponent_median_{sfx}", "topology", "", "float64",
                "median x solving d0^x = d1^x + d2^x at bifurcations where both daughters are thinner than the parent",
                REF_MURRAY, **kw)
            add(f"junction_exponent_deviation_{sfx}", "topology", "", "float64",
                "junction_exponent_median - 3 (Murray's law)", REF_MURRAY, **kw)

    # --- optic disc and cup -------------------------------------------------------------------------------------
    for part in ("disc", "cup", "rim"):
        add(f"{part}_area_px", "disc", "px^2", "float64", f"{part} area" + (" = disc - cup" if part == "rim" else ""))
        add(f"{part}_area_mm2", "disc", "mm^2", "float64", f"{part} area")
    for part in ("disc", "cup"):
        for d in ("vertical", "horizontal"):
            add(f"{part}_{d}_diameter_px", "disc", "px", "float64", f"{part} {d} extent (rows / columns spanned)")
            add(f"{part}_{d}_diameter_mm", "disc", "mm", "float64", f"{part} {d} extent")
    add("cdr_vertical", "disc", "ratio", "float64", "cup vertical diameter / disc vertical diameter")
    add("cdr_horizontal", "disc", "ratio", "float64", "cup horizontal diameter / disc horizontal diameter")
    add("cdr_area", "disc", "ratio", "float64", "cup area / disc area")
    for s in ISNT_SECTORS:
        add(f"rim_width_{s}_px", "disc", "px", "float64",
            f"median (disc radius - cup radius) along rays in the 90 deg {s} sector (nasal = away from the fovea)",
            REF_ISNT)
        add(f"rim_width_{s}_mm", "disc", "mm", "float64", f"{s} rim width", REF_ISNT)
    add("isnt_rule", "disc", "", "bool", "I >= S >= N >= T rim widths (needs laterality)", REF_ISNT)
    add("disc_orientation_deg", "disc", "deg", "float64",
        "angle of the disc's major axis from the image horizontal, counter-clockwise as seen, in [0, 180)")
    add("disc_ovality", "disc", "ratio", "float64", "minor / major axis length of the disc (moment ellipse)")

    # --- lesions ------------------------------------------------------------------------------------------------
    for c in LESION_TARGETS:
        add(f"{c}_count", "lesions", "count", "int64", f"{c} connected components (8-connectivity)")
        add(f"{c}_area_px", "lesions", "px^2", "float64", f"{c} total area")
        add(f"{c}_area_mm2", "lesions", "mm^2", "float64", f"{c} total area")
        add(f"{c}_coverage", "lesions", "ratio", "float64", f"{c} area / retina area")
        for b, lo, hi in SIZE_BINS_MM2:
            add(f"{c}_count_{b}", "lesions", "count", "int64", f"{c} components with area in [{lo}, {hi}) mm^2")
        add(f"{c}_circularity_mean", "lesions", "ratio", "float64", f"mean 4 pi A / P^2 over {c} components")
        add(f"{c}_aspect_ratio_mean", "lesions", "ratio", "float64",
            f"mean major/minor axis (moment ellipse) over {c} components")
        for q in LESION_QUADRANTS:
            add(f"{c}_count_{q}", "lesions", "count", "int64",
                f"{c} components whose centroid lies in the {q} quadrant around the fovea (needs laterality)",
                REF_ETDRS)
        add(f"{c}_etdrs_centre_count", "lesions", "count", "int64",
            f"{c} components touching the ETDRS centre subfield (0.5 mm around the fovea)", REF_ETDRS)
        add(f"{c}_etdrs_centre_involved", "lesions", "", "bool", f"any {c} pixel in the ETDRS centre subfield",
            REF_ETDRS)

    # --- tessellation and myopic atrophy ------------------------------------------------------------------------
    add("tessellation_count", "phenotype", "count", "int64", "tessellation components", REF_RETSAM)
    add("tessellation_area_mm2", "phenotype", "mm^2", "float64", "tessellation area", REF_RETSAM)
    add("tessellation_coverage", "phenotype", "ratio", "float64", "tessellation area / retina area", REF_RETSAM)
    add("tessellation_circularity_mean", "phenotype", "ratio", "float64", "mean component 4 pi A / P^2", REF_RETSAM)
    add("tessellation_aspect_ratio_mean", "phenotype", "ratio", "float64", "mean component major/minor axis", REF_RETSAM)
    add("tessellation_centroid_dispersion", "phenotype", "ratio", "float64",
        "area-weighted RMS distance of component centroids from their mean centroid / field-of-view radius",
        REF_RETSAM)
    add("tessellation_centroid_dispersion_mm", "phenotype", "mm", "float64", "the same dispersion in mm", REF_RETSAM)
    for c in ATROPHY_TARGETS:
        add(f"{c}_count", "phenotype", "count", "int64", f"{c} components", REF_RETSAM)
        add(f"{c}_area_px", "phenotype", "px^2", "float64", f"{c} area", REF_RETSAM)
        add(f"{c}_area_mm2", "phenotype", "mm^2", "float64", f"{c} area", REF_RETSAM)
        add(f"{c}_coverage", "phenotype", "ratio", "float64", f"{c} area / retina area", REF_RETSAM)
    add("atrophy_total_coverage", "phenotype", "ratio", "float64", "union of the three atrophy masks / retina area")
    add("ppa_disc_area_ratio", "phenotype", "ratio", "float64", "peripapillary atrophy area / optic disc area")

    # --- image quality ------------------------------------------------------------------------------------------
    q = "heuristic image-quality signal (not a trained classifier)"
    add("quality_fov_fraction", "quality", "ratio", "float64", "retina pixels / image pixels")
    add("quality_brightness", "quality", "ratio", "float64", "mean green intensity in the retina / 255")
    add("quality_illumination_uniformity", "quality", "ratio", "float64",
        f"1 - coefficient of variation of the heavily blurred green channel over the retina; {q}")
    add("quality_contrast", "quality", "ratio", "float64",
        f"RMS of (green - its blurred background) / background mean over the retina; {q}")
    add("quality_sharpness", "quality", "", "float64",
        f"variance of the Laplacian of the green channel (scaled to mean 100) on a 512 px grid, eroded retina; {q}")
    add("quality_vessel_visibility", "quality", "ratio", "float64",
        "1 - mean green on vessel pixels / mean green on a 3 px ring around them, on the 512 px grid (needs a vessel mask)")
    add("quality_score", "quality", "ratio", "float64", "mean of the sub-scores mapped to [0, 1]; " + q)
    add("quality_grade", "quality", "", "string", "good / usable / reject from documented thresholds; " + q)
    add("gradable", "quality", "", "bool", "quality_grade != reject")
    return cols


CATALOGUE: tuple[Column, ...] = tuple(_build())
COLUMNS: dict[str, Column] = {c.name: c for c in CATALOGUE}
assert len(COLUMNS) == len(CATALOGUE), "duplicate catalogue names"

# Per-segment long table (image_id is added by the pipeline).
SEGMENT_COLUMNS: tuple[Column, ...] = (
    Column("layer", "segment", None, None, "", "string", "all / artery / vein"),
    Column("segment_id", "segment", None, None, "", "int64", "index of the segment within its layer"),
    Column("length_px", "segment", None, None, "px", "float64", "arc length of the smoothed centreline"),
    Column("length_mm", "segment", None, None, "mm", "float64", "arc length"),
    Column("chord_px", "segment", None, None, "px", "float64", "distance between the segment ends"),
    Column("tortuosity_distance", "segment", None, None, "ratio", "float64", "arc / chord", REF_HART),
    Column("tortuosity_curvature_per_px2", "segment", None, None, "1/px^2", "float64",
           "(integral k^2 ds) / L on the smoothed centreline", REF_HART),
    Column("tortuosity_curvature_per_mm2", "segment", None, None, "1/mm^2", "float64", "the same in mm", REF_HART),
    Column("tortuosity_density_per_mm", "segment", None, None, "1/mm", "float64",
           "(n-1)/n * (1/L) * sum(L_i/S_i - 1), split at curvature sign changes", REF_GRISAN),
    Column("width_median_px", "segment", None, None, "px", "float64",
           "median of 2*DT - 1 along the centreline, ends trimmed by one width"),
    Column("width_median_um", "segment", None, None, "um", "float64", "median width"),
    Column("mid_x_px", "segment", None, None, "px", "float64", "arc midpoint, column"),
    Column("mid_y_px", "segment", None, None, "px", "float64", "arc midpoint, row"),
    Column("distance_from_disc_px", "segment", None, None, "px", "float64", "arc midpoint distance from disc centre"),
    Column("distance_from_disc_r", "segment", None, None, "r", "float64", "the same in disc radii"),
    Column("zone", "segment", None, None, "", "string",
           "disc (<r) / A (r-2r) / B (2r-3r) / C (3r-5r, zone C beyond B) / outer, by midpoint distance; null without a disc"),
)


def _field(c: Column) -> pa.Field:
    meta = {"unit": c.unit, "description": c.definition, "family": c.family}
    if c.reference:
        meta["reference"] = c.reference
    return pa.field(c.name, _ARROW[c.dtype], nullable=True, metadata=meta)


def image_schema() -> pa.Schema:
    """Arrow schema of the per-image biomarker columns (the pipeline adds image_id/status columns)."""
    return pa.schema([_field(c) for c in CATALOGUE])


def segment_schema() -> pa.Schema:
    """Arrow schema of the long per-segment table (without image_id)."""
    return pa.schema([_field(c) for c in SEGMENT_COLUMNS])

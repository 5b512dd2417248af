"""QC for finished outputs: overlays (OUTPUT/qc/*.png), the cohort HTML report and DuckDB queries.

- `pipeline.qc.overlays.render_overlays(output, image_ids=None, storage_options=None, mode="sample")`
- `pipeline.qc.report.build_report(output, out=None, storage_options=None)`
- `pipeline.qc.query.query(output, sql, storage_options=None)` / `connect(...)` / `export(...)`
- `pipeline.qc.cli.register(subparsers)` adds `overlay`, `report` and `query` to the `retsam` command line.
"""

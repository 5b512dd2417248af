"""RetSAM cohort pipeline: Ray Data from object storage to partitioned Parquet (resumable).

Entry points: `pipeline.runner.run_cohort`, `pipeline.reprocess.reprocess_output`, `pipeline.scan.scan`, and the
`retsam` command line (`pipeline.cli:main`).
"""

PIPELINE_VERSION = "0.2.6"

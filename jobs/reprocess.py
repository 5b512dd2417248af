"""Ray job: recompute biomarkers from the stored masks of an output (no segmentation, CPU workers only).

    ray job submit --working-dir . -- python jobs/reprocess.py s3://bucket/retsam/out

Takes the arguments of `retsam reprocess`; connects to the cluster (`--address auto`) unless told otherwise.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.run_cohort import job_argv  # noqa: E402
from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(job_argv(sys.argv[1:], "reprocess")))

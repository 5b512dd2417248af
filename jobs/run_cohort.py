"""Ray job: run the RetSAM pipeline on a cohort, on the cluster this job was submitted to.

    ray job submit --working-dir . --submission-id cohort-A -- \
        python jobs/run_cohort.py s3://bucket/cohort/manifest.csv s3://bucket/retsam/out --num-gpus 1

Takes exactly the arguments of `retsam run` (see `retsam run --help`); connects to the cluster (`--address auto`)
unless an address is given. Resumable: resubmitting continues where a failed or stopped job left off.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402


def job_argv(argv: list[str], command: str) -> list[str]:
    args = [command, *argv]
    if "--address" not in argv:
        args += ["--address", "auto"]
    if "--no-progress" not in argv and command == "run":
        args.append("--no-progress")  # job logs are not a terminal: one line per committed batch instead
    return args


if __name__ == "__main__":
    sys.exit(main(job_argv(sys.argv[1:], "run")))

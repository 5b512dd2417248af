"""Ray job entry point for evaluation: `ray job submit --working-dir . -- python jobs/evaluate.py --dataset idrid --out OUT`.

Same flags as `retsam evaluate` (see retsam_core/evaluation/cli.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from retsam_core.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

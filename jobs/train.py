"""Ray job entry point for training: `ray job submit --working-dir . -- python jobs/train.py --num-workers 4 --num-gpus 4 ...`.

Same flags as `retsam train` (see retsam_core/training/cli.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from retsam_core.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

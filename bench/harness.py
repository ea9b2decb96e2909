"""The end-to-end benchmark (the same as `python -m bench.e2e` and `make bench`).

    .venv/bin/python bench/harness.py [--quick] [--workers 1,2] [--rates 500,1000] ...

Starts (or reuses) the bench broker in .state/bench-kafka, signs a workload of many
agents, measures the crypto floor, the gate in process, a raw consume->produce loop and
the gate in 1 and 2 `trustplane worker` processes, profiles a worker with py-spy, and
writes bench/results/<mode>.json, .md and .png. The code is in bench/e2e/.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.evaluation [--seed 7] [--days 3] [--json] ...``"""

import sys

from bench.evaluation.evaluate import main

sys.exit(main())

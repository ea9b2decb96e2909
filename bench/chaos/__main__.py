"""``python -m bench.chaos [--quick] [--self-test] ...``"""

import sys

from bench.chaos.cli import main

sys.exit(main())

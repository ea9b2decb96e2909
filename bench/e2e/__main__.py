"""``python -m bench.e2e [--quick] ...``"""

import sys

from bench.e2e.cli import main

sys.exit(main())

"""``python -m streams.bench [--quick] ...``"""

import sys

from streams.bench.cli import main

sys.exit(main())

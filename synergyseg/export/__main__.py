"""`python -m synergyseg.export ...`: see synergyseg/export/cli.py."""

import sys

from synergyseg.export.cli import main

sys.exit(main())

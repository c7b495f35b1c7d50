import sys

from synergyseg.predict.cli import main

sys.exit(main())

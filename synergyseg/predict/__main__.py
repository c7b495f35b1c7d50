import sys

from synergyseg.quiet import quiet_tensorflow

quiet_tensorflow()  # first: drops TensorFlow's start-up lines (a no-op once `import synergyseg` ran it)

from synergyseg.predict.cli import main  # noqa: E402

sys.exit(main())

import sys

from dnarch_jax.cli import main

sys.exit(main())

import sys

from dnarch_jax.interfaces.cli import main

sys.exit(main())

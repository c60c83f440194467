"""`python -m kd_jax.miniature`: the same as `kd-jax miniature`."""

import sys

from kd_jax.main import main

sys.exit(main(["miniature", *sys.argv[1:]]))

"""`python -m kd_jax.miniature`: see kd_jax/miniature/__init__.py."""

import sys

from kd_jax.miniature import main

sys.exit(main())

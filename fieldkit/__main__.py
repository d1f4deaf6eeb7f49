"""python -m fieldkit: the same as the streetgrid-field console script."""

import sys

from fieldkit.cli import main

sys.exit(main())

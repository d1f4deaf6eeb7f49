"""`python -m protocol decode ...`: see protocol/cli.py."""
import sys

from protocol.cli import main

sys.exit(main(sys.argv[1:]))

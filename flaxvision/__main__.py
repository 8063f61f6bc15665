"""`python -m flaxvision COMMAND ...`: the `flaxvision` command (flaxvision.cli)."""

import sys

from flaxvision.cli import main

sys.exit(main())

"""flaxvision: the library code behind the DVC stages (data, transforms, training, evaluation)."""

import sys
from pathlib import Path

from flaxvision import interrupts, numerics

# The project's command (pyproject.toml's script): a signal during its imports, which take
# seconds, ends it with one line too (flaxvision.interrupts).
if Path(sys.argv[0]).name in interrupts.COMMANDS:
    interrupts.exit_at_once(interrupts.NOTHING_WRITTEN)

# Before JAX starts: XLA reads its flags once (see flaxvision.numerics).
numerics.use_default()

# The architectures are the package flaxvision.models. Installed, they sit inside this package
# (pyproject.toml's package-dir); in a checkout they are the top-level models/ folder beside it.
# Searching the checkout that this flaxvision/ is part of (not the one an editable install
# points at) makes a DVC experiment's temp copy run its own models/.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "models" / "__init__.py").is_file() and not (_checkout / "flaxvision" / "models").is_dir():
    __path__.append(str(_checkout))

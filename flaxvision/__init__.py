"""flaxvision: the library code behind the DVC stages (data, transforms, training, evaluation)."""

from pathlib import Path

from flaxvision import numerics

# Before JAX starts: XLA reads its flags once (see flaxvision.numerics).
numerics.use_default()

# The architectures are the package flaxvision.models. Installed, they sit inside this package
# (pyproject.toml's package-dir); in a checkout they are the top-level models/ folder beside it.
# Searching the checkout that this flaxvision/ is part of (not the one an editable install
# points at) makes a DVC experiment's temp copy run its own models/.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "models" / "__init__.py").is_file() and not (_checkout / "flaxvision" / "models").is_dir():
    __path__.append(str(_checkout))

"""flaxvision: the library code behind the DVC stages (data, transforms, training, evaluation)."""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from flaxvision import interrupts

# The project's command (pyproject.toml's script): a signal during its imports, which take
# seconds, ends it with one line too (flaxvision.interrupts); so this comes before any other import.
if Path(sys.argv[0]).name in interrupts.COMMANDS:
    interrupts.exit_at_once(interrupts.NOTHING_WRITTEN)

from flaxvision import numerics  # noqa: E402

# Before JAX starts: XLA reads its flags once (see flaxvision.numerics).
numerics.use_default()


class _CheckoutModels(importlib.abc.MetaPathFinder):
    """Finds ``flaxvision.models``, and nothing else, in a checkout's top-level models/ folder.

    The architectures are the package flaxvision.models. Installed from a wheel, they sit inside
    this package (pyproject.toml's package-dir) and this finder is not installed; in a checkout
    they are the top-level models/ folder beside flaxvision/. Mapping the checkout that this
    flaxvision/ is part of (not the one an editable install points at) makes a DVC experiment's
    temp copy (.dvc/tmp/exps/) run its own models/. Only that one name is mapped: the checkout's
    other folders (stages/, benchmarks/, setup.py) are no submodules of flaxvision. Its submodules
    are found in the package's own ``__path__``, the folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "flaxvision.models":
            return None
        return importlib.util.spec_from_file_location(
            fullname, self.folder / "__init__.py", submodule_search_locations=[str(self.folder)]
        )


_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "models" / "__init__.py").is_file() and not (_checkout / "flaxvision" / "models").is_dir():
    # First: ahead of the path finders and of an editable install's finder, which maps the name
    # to the installed checkout's models/. A re-import of this package replaces its finder.
    sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__name__ != _CheckoutModels.__name__]
    sys.meta_path.insert(0, _CheckoutModels(_checkout / "models"))

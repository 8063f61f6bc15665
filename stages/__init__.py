"""The DVC stages, each run as ``python -m stages.<name>`` (dvc.yaml)."""

import sys

from flaxvision import interrupts

# Run as a stage, before the stage module's imports (JAX's take seconds): a signal or DVC's end
# during them ends the stage with one line (flaxvision.interrupts). Not when tests import stages.
if "-m" in sys.orig_argv and sys.orig_argv[sys.orig_argv.index("-m") + 1].startswith(f"{__name__}."):
    interrupts.exit_at_once()
    interrupts.end_with_parent()

"""User-facing errors: one line that names the bad file or parameter and the fix."""

import functools
import sys


class UserError(Exception):
    """A problem the user can fix (bad parameter, missing or corrupt file).

    Stage entry points print it as a single line instead of a traceback.
    """


def stage_main(main):
    """Decorate a stage's ``main()`` so a UserError exits with a one-line message.

    For a stage that imports JAX, it also sets JAX up (flaxvision.runtime): the persistent
    compilation cache, multi-host runs. Stages that do not (source, download) never load it, which
    keeps their start-up short: source runs at every `dvc repro`.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        if "jax" in sys.modules:
            # Here, not at the top: runtime imports JAX, which the source and download stages never load.
            from flaxvision.runtime import setup_jax

            setup_jax()
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted: rerun the same command to resume", file=sys.stderr)
            sys.exit(130)

    return wrapper

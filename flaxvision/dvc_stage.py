"""The stages as dvc.yaml declares them: the one table of what each stage's code is, and their
entry point (`stage_main`).

A stage's deps in dvc.yaml list every project module it imports, transitively
(tests/test_dvc_deps.py checks this against the import graph); the train stage hashes the
same files into its run fingerprint, so a checkpoint is resumed only by the same code. The
stages that compute also depend on the pinned toolchain, ``TOOLCHAIN_LOCK``.
"""

import argparse
import errno
import functools
import os
import signal
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import cast

import yaml

from flaxvision import interrupts, numerics
from flaxvision.errors import ArgumentParser, UserError
from flaxvision.params import Params, load_params

DVC_FILE = Path(__file__).resolve().parents[1] / "dvc.yaml"  # the project this code is part of
CODE_ROOTS = ("flaxvision", "models", "stages")
SOURCE_SUFFIXES = (".py", ".cc")
TOOLCHAIN_LOCK = DVC_FILE.parent / "uv.lock"  # every dependency pinned: another JAX computes other numbers


def stages(dvc_file: Path = DVC_FILE) -> dict:
    try:
        return yaml.safe_load(dvc_file.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise UserError(
            f"{dvc_file}: cannot read its stages ({type(error).__name__}): "
            "run the stages from a checkout of the project"
        ) from None


def stage_deps(stage: str, dvc_file: Path = DVC_FILE) -> list[str]:
    try:
        return stages(dvc_file)[stage]["deps"]
    except KeyError:
        raise UserError(f"{dvc_file}: no stage {stage}: run the stages from a checkout of the project") from None


def code_files(stage: str, dvc_file: Path = DVC_FILE) -> list[Path]:
    """The source files among ``stage``'s deps (folders expanded): Python, and the C++ of the
    compiled extension (setup.py). In a stable order."""
    files: set[Path] = set()
    for dep in stage_deps(stage, dvc_file):
        path = dvc_file.parent / dep
        if Path(dep).parts[0] not in CODE_ROOTS:
            continue  # data
        files.update((p for p in path.rglob("*") if p.suffix in SOURCE_SUFFIXES) if path.is_dir() else [path])
    return sorted(files)


def stage_main(main: Callable[[Params], None]) -> Callable[[], None]:
    """Decorate a stage's ``main(params)`` into ``main()``: its command line, and how it ends: a UserError, a full
    disk or memory, SIGINT or SIGTERM as one line (`stage_ending`, flaxvision.interrupts).

    Run as ``python -m stages.<name>``, the stage takes no arguments (params.yaml holds its
    settings) and answers ``--help`` from its docstring and dvc.yaml without running. It is
    called with params.yaml, parsed and checked whole (flaxvision.params).
    Before the stage computes, it sets params.yaml's ``numerics`` (flaxvision.numerics) where
    dvc.yaml lists that param for the stage, and for a stage that imports JAX the persistent
    compilation cache and multi-host runs (flaxvision.runtime). Stages that do not (source,
    download) never load JAX, which keeps their start-up short: source runs at every `dvc repro`.
    """

    @functools.wraps(main)
    def wrapper() -> None:
        as_program = main.__module__ == "__main__"  # the command line, not a call from Python (tests)
        if as_program:
            describe_stage(sys.modules["__main__"]).parse_args()
        try:
            if as_program:
                interrupts.during_work()
            spec = sys.modules["__main__"].__spec__
            module = spec.name if as_program and spec else main.__module__
            _, stage = stage_of(module) or (None, {})
            params = load_params()
            if "numerics" in stage.get("params", []):  # the stages whose outputs XLA or oneDNN compute
                numerics.use(params.numerics)
            if "jax" in sys.modules:
                # Here, not at the top: runtime imports JAX, which the source and download stages never load.
                from flaxvision.runtime import setup_jax

                setup_jax()
            main(params)
        except BaseException as error:
            if as_program:
                interrupts.ignore_from_now()  # a signal now must not interrupt the line
            if (ending := stage_ending(error)) is None:
                raise  # a bug: its traceback is what to report
            status, line = ending
            print(line, file=sys.stderr)
            sys.exit(status)
        finally:
            if as_program:
                interrupts.ignore_from_now()  # the work and its line are done: exit with their status

    return wrapper


def stage_ending(error: BaseException) -> tuple[int, str] | None:
    """The exit status and the one line that end a stage on ``error``; None for an unexpected error."""
    if isinstance(error, UserError):
        return 1, f"error: {error}"
    if isinstance(error, KeyboardInterrupt):
        signum = signal.SIGTERM if isinstance(error, interrupts.Terminated) else signal.SIGINT
        return interrupts.EXIT_STATUS[signum], interrupts.ending_line(signum)
    if isinstance(error, MemoryError):
        return 1, "error: out of memory: lower train.batch_size or extract_features.batch_size, or free memory"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = error.filename or Path.cwd()
        detail = "" if error.strerror == os.strerror(error.errno) else f" ({error.strerror})"
        return 1, f"error: no space left on the disk of {where}{detail}: free space there (`df -h {where}`) and rerun"
    if isinstance(error, Exception) and "RESOURCE_EXHAUSTED" in str(error):  # XLA out of device memory
        reason = str(error).strip().splitlines()[0]
        return 1, f"error: out of device memory ({reason}): lower train.batch_size or extract_features.batch_size"
    return None


def stage_of(module: str) -> tuple[str, dict] | None:
    """dvc.yaml's stage that runs module ``module`` (``python -m <module>``): its name and
    definition, or None if none does."""
    command = f"python -m {module}"
    return next(((name, stage) for name, stage in stages().items() if stage["cmd"] == command), None)


def describe_stage(module: ModuleType) -> argparse.ArgumentParser:
    """The command line of stage module ``module``: no arguments; ``--help`` shows its docstring,
    and the params it reads and the outputs it writes, as dvc.yaml declares them."""
    spec = cast(ModuleSpec, module.__spec__)  # a stage runs as `python -m <module>`, which sets it
    found = stage_of(spec.name)
    epilog = "Settings come from params.yaml; the stage takes no arguments."
    if found:
        name, stage = found
        params = ", ".join(str(p) for p in stage.get("params", [])) or "none"
        outputs = stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
        outs = ", ".join(next(iter(o)) if isinstance(o, dict) else str(o) for o in outputs)  # {path: options}
        epilog = f"DVC stage {name} (dvc repro {name}). Reads params.yaml: {params}. Writes: {outs}."
    return ArgumentParser(
        prog=f"python -m {spec.name}",
        description=module.__doc__,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

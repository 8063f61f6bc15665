"""Kill anywhere, lose nothing, leave nothing: every stage of dvc.yaml, SIGKILLed at several
moments; and SIGINT or SIGTERM at some, to the stage or to DVC, ending it with one line and the
exit status 130 or 143, its worker processes and nothing written after it.

One uninterrupted `dvc repro` of a tiny project is the reference. Then, per stage, a chain of
interrupted runs, each on the workspace the one before left (its temporaries, unfinished
checkpoints and checkpoints to resume from included): each runs the stage with
`dvc repro --force --single-item <stage>`, sends the signal to the stage's own process (the python
child of dvc, found by its command line) or to DVC at a moment seen from the filesystem, and checks
that each of the stage's outputs is absent or byte-identical to the reference's, and that nothing
else in the workspace changed or appeared (no temporaries, no curves).

After the chain's last run, the stage is rerun the same way once: the whole workspace (dvc.lock
and every output included) must be byte-identical to the reference, `git status` clean, and no
temporary left, not even in .dvc/tmp or as an unfinished Orbax checkpoint.

Every run is forced: otherwise DVC would restore the reference's outputs from its cache instead
of running the stage, and the rerun would test nothing.
"""

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import psutil  # DVC's own dependency
import pytest
import yaml

from flaxvision.files import TEMP_AREA
from tests.helpers import STAGES
from tests.projects import commit, dvc, dvc_command, environment, git, image_folder, new_project

pytestmark = pytest.mark.slow
# Not the workspace a user or DVC looks at (all git-ignored, and __pycache__ anywhere): git's and
# DVC's own folders, the resume point with its curves, the compilation cache.
PRIVATE = {".git", ".dvc", "checkpoints", ".downloads"}
ORBAX_TMP = ".orbax-checkpoint-tmp"


def started(root: Path) -> bool:
    return True  # the stage's process exists and has written nothing yet


def temporary(output: str):
    """An atomic write of ``output`` is under way: a temp folder of a live process exists (in
    .dvc/tmp or, where it must not be, beside the output). An earlier killed run's lies there till
    the next write sweeps it."""

    def writing(root: Path) -> bool:
        return any(
            folder.is_dir()
            and any(
                entry.name.startswith(f".{Path(output).name}.") and psutil.pid_exists(writer(entry.name))
                for entry in os.scandir(folder)
            )
            for folder in (root / TEMP_AREA, (root / output).parent)
        )

    return writing


def writer(name: str) -> int:
    """The process id a temporary's name ends with (flaxvision.files: ``.<target>.<id>.<host>-<pid>.tmp``)."""
    return int(name.removesuffix(".tmp").rpartition("-")[2])


def exists(path: str):
    return lambda root: (root / path).exists()


def checkpoint_step(root: Path, epoch: int) -> int:
    """The Orbax step of the checkpoint after ``epoch``: checkpoints are numbered by train steps done."""
    train = json.loads((root / "data" / "prepared" / "dataset.json").read_text())["splits"]["train"]
    return epoch * (train // yaml.safe_load((root / "params.yaml").read_text())["train"]["batch_size"])


def saving_checkpoint(epoch: int):
    """Orbax is writing the checkpoint after ``epoch`` (its temp folder exists)."""
    return lambda root: (root / "checkpoints").is_dir() and any(
        entry.name.startswith(f"{checkpoint_step(root, epoch)}{ORBAX_TMP}")
        for entry in os.scandir(root / "checkpoints")
    )


def after_epoch(epoch: int):
    """The checkpoint after ``epoch`` is written (training goes on)."""
    return lambda root: (root / "checkpoints" / str(checkpoint_step(root, epoch))).is_dir()


def checkpointed(root: Path, epoch: int) -> bool:
    """checkpoints/ holds a finished checkpoint of ``epoch`` or a later one: train resumes after it."""
    folder = root / "checkpoints"
    return folder.is_dir() and any(
        entry.name.isdigit() and int(entry.name) >= checkpoint_step(root, epoch) for entry in os.scandir(folder)
    )


# When each stage is killed. A stage missing here (added later) is killed as it starts and when its
# outputs are all in place, before it exits.
MOMENTS = {
    "download": {"copying the files": temporary("data/raw"), "output in place": exists("data/raw")},
    "preprocess": {"decoding the images": temporary("data/prepared"), "output in place": exists("data/prepared")},
    # Writes its one small manifest at once (simple_cnn has no features): nothing mid-work to hit.
    "extract-features": {"starting": started, "output in place": exists("data/features")},
    "train": {
        "saving checkpoint 1": saving_checkpoint(1),
        "in epoch 2": after_epoch(1),
        "saving checkpoint 2": saving_checkpoint(2),
        "model in place": exists("artifacts/model"),
        "curves in place": exists("results/train/plots"),
    },
    "evaluate": {
        "drawing the pictures": temporary("results/evaluate/plots"),
        "pictures in place": exists("results/evaluate/plots"),
    },  # metrics come last
}
# Train's moments of an epoch's checkpoint, by epoch: only a run that starts short of that
# checkpoint goes through them.
SHORT_OF = {"saving checkpoint 1": 1, "in epoch 2": 1, "saving checkpoint 2": 2}


def outputs(stage: dict) -> list[str]:
    return [
        next(iter(out)) if isinstance(out, dict) else out
        for kind in ("outs", "metrics", "plots")
        for out in stage.get(kind, [])
    ]


def moments(name: str) -> dict:
    return MOMENTS.get(name) or {
        "starting": started,
        "outputs in place": lambda root: all((root / out).exists() for out in outputs(STAGES[name])),
    }


def seconds_after_start(seconds: float):
    """``seconds`` after the stage's process appeared (first looked at): a second in, it is
    importing its modules (JAX's take seconds)."""
    first_look: list[float] = []

    def elapsed(root: Path) -> bool:
        first_look[:] = first_look or [time.monotonic()]
        return time.monotonic() - first_look[0] >= seconds

    return elapsed


class Case(NamedTuple):
    """One interrupted run: ``signum`` sent at ``moment`` to ``stage``, or to DVC."""

    stage: str
    moment: str
    signum: signal.Signals = signal.SIGKILL
    to_dvc: bool = False

    def __str__(self) -> str:
        return f"{self.stage} sent {self.interruption}"

    @property
    def interruption(self) -> str:
        return f"{self.signum.name}{' via DVC' if self.to_dvc else ''} at '{self.moment}'"

    def when(self):
        """The moment's test, made anew for each run: importing's clock starts at that run's first look."""
        return seconds_after_start(1.0) if self.moment == "importing" else moments(self.stage)[self.moment]


# SIGINT (as from Ctrl-C, to the stage and its workers) and SIGTERM (to the stage, or to DVC)
# at a few moments: each must end the stage with one line and 130 or 143, and lose nothing either.
SIGNAL_CASES = [
    Case("preprocess", "importing", signal.SIGINT),
    Case("preprocess", "decoding the images", signal.SIGINT),
    Case("preprocess", "decoding the images", signal.SIGTERM, to_dvc=True),
    Case("train", "importing", signal.SIGTERM),
    Case("train", "in epoch 2", signal.SIGINT),
    Case("train", "saving checkpoint 2", signal.SIGTERM),
    Case("train", "in epoch 2", signal.SIGTERM, to_dvc=True),
    Case("evaluate", "drawing the pictures", signal.SIGTERM),
]
# Each stage's cases in the order they run, each on the workspace the one before left: the
# SIGKILLs at its moments, then its other signals.
CHAINS = {
    stage: [
        *(Case(stage, moment) for moment in moments(stage)),
        *(case for case in SIGNAL_CASES if case.stage == stage),
    ]
    for stage in STAGES
}


def snapshot(root: Path) -> dict[str, str]:
    """The SHA-256 of every file of the workspace, by path (PRIVATE folders left out)."""
    files = {}
    for folder, subfolders, names in os.walk(root):
        here = Path(folder).relative_to(root)
        subfolders[:] = [
            name for name in subfolders if name != "__pycache__" and not (here == Path(".") and name in PRIVATE)
        ]
        for name in names:
            files[(here / name).as_posix()] = hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest()
    return files


def inside(name: str, path: str) -> bool:
    return name == path or name.startswith(f"{path}/")


def under(files: dict, path: str) -> dict:
    return {name: digest for name, digest in files.items() if inside(name, path)}


def outside(files: dict, paths: list[str]) -> dict:
    return {name: digest for name, digest in files.items() if not any(inside(name, path) for path in paths)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A project after an uninterrupted run, committed, and its snapshot."""
    images = image_folder(tmp_path_factory.mktemp("images"))
    root = new_project(tmp_path_factory.mktemp("project"), f"folder:{images}", epochs=3)
    dvc(root, "repro")
    commit(root, "the uninterrupted run")
    return root, snapshot(root)


def run_killed(root: Path, case: Case, moment) -> float:
    """Run the case's stage under DVC and send its signal to the stage's process (and its children,
    as a terminal sends SIGINT to the whole process group), or to DVC, when ``moment(root)`` holds;
    check how it ended; the seconds it ran."""
    command = shlex.split(STAGES[case.stage]["cmd"])
    log = root / ".git" / "killed-run.log"  # out of the workspace, kept for a failure's message
    with open(log, "wb") as output:
        repro = subprocess.Popen(
            dvc_command("repro", "--force", "--single-item", case.stage),
            cwd=root,
            env=environment(root),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    start, deadline = time.monotonic(), time.monotonic() + 180
    while (process := stage_process(repro, command)) is None:
        assert repro.poll() is None and time.monotonic() < deadline, (
            f"{case}: the stage never started:\n{log.read_text()}"
        )
    while not moment(root):
        assert running(process), f"{case}: the stage ended before the moment:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{case}: the stage never reached the moment:\n{log.read_text()}"
        time.sleep(0.001)
    ran = time.monotonic() - start
    children = process.children(recursive=True)
    if case.to_dvc:
        repro.send_signal(case.signum)
    else:
        for target in (process, *(children if case.signum == signal.SIGINT else ())):
            with contextlib.suppress(psutil.NoSuchProcess):
                target.send_signal(case.signum)
    repro.wait(timeout=60)
    psutil.wait_procs([process, *children], timeout=10)
    assert not any(running(p) for p in (process, *children)), f"{case}: the stage or its workers outlived the signal"
    text = log.read_text()
    if case.signum == signal.SIGKILL:
        # DVC's report: the signal ended the stage (not the stage's own exit before the signal came).
        # DVC runs the command through $SHELL: bash execs it (DVC sees -9), dash waits on it and
        # reports the kill as status 137 (128 + SIGKILL).
        assert re.search(r"exited with (-9|137)$", text, re.MULTILINE), f"{case}: the stage was not killed:\n{text}"
    else:
        assert "Traceback" not in text, f"{case}: a traceback:\n{text}"
        line = f"{'interrupted' if case.signum == signal.SIGINT else 'terminated'}: rerun the same command to resume"
        assert text.count(line) == 1, f"{case}: the stage did not end with its one line:\n{text}"
        if not case.to_dvc:
            assert re.search(rf"exited with {128 + case.signum}$", text, re.MULTILINE), f"{case}: its status:\n{text}"
    return ran


def stage_process(repro: subprocess.Popen, command: list[str]) -> psutil.Process | None:
    """The process running ``command`` among dvc's descendants (not the shell dvc starts it with)."""
    try:
        return next(
            (
                child
                for child in psutil.Process(repro.pid).children(recursive=True)
                if child.cmdline()[1:] == command[1:]
            ),
            None,
        )
    except psutil.Error:  # a process ended while being looked at
        return None


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("stage", STAGES)
def test_an_interrupted_stage_loses_nothing_and_leaves_nothing(reference, stage):
    root, expected = reference
    assert snapshot(root) == expected, f"{stage}: an earlier stage's chain left the workspace changed"
    outs = outputs(STAGES[stage])
    for case in CHAINS[stage]:
        when = case.when()
        # Else train would resume past the moment (from the reference's checkpoints or an earlier
        # case's), or an earlier kill's unfinished checkpoint would fake it before the run began.
        if case.moment in SHORT_OF and (when(root) or checkpointed(root, SHORT_OF[case.moment])):
            shutil.rmtree(root / "checkpoints")
        seconds = run_killed(root, case, when)
        left = snapshot(root)
        for out in outs:
            assert under(left, out) in ({}, under(expected, out)), f"{case}: {out} is half-written after the signal"
        assert outside(left, outs) == outside(expected, outs), (
            f"{case}: the signal changed or left files beside its outputs"
        )
        print(f"{case} after {seconds:.1f} s: outputs absent or identical")

    dvc(root, "repro", "--force", "--single-item", stage)
    rerun = f"{stage} rerun after {'; '.join(case.interruption for case in CHAINS[stage])}"
    assert snapshot(root) == expected, f"{rerun}: the workspace differs from the uninterrupted run's"
    assert git(root, "status", "--porcelain", "--untracked-files=all") == "", f"{rerun}: git status is not clean"
    assert list((root / TEMP_AREA).iterdir()) == [], f"{rerun}: temporaries of interrupted runs are left in .dvc/tmp"
    assert not list((root / "checkpoints").glob(f"*{ORBAX_TMP}*")), f"{rerun}: an unfinished checkpoint is left"
    print(f"{rerun}: identical, nothing left")

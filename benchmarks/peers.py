"""The frameworks compared, each run in its own process and environment.

flaxvision runs in the project's locked environment. The peers, TF-Keras and PyTorch (CPU
builds), are installed on first use into their own virtual environments under
benchmarks/.peers/ (git-ignored), with pinned versions: uv makes the environment and that
environment's pip fills it, so the machine's pip configuration (an index mirror, a folder of
wheels) applies. PyPI serves torch for Linux as a CUDA build (it runs on CPU, but pulls ~3 GB of
CUDA libraries); point pip at the CPU wheel (PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL) to get it.

A peer that cannot be installed or run is reported as missing, with the reason.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.workloads import RESULT_PREFIX
from flaxvision.files import write_bytes

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / "benchmarks" / ".peers"
LOG_DIR = PEERS_DIR / "logs"
PEER_PYTHON = "3.11"
INSTALL_TIMEOUT_S = 1800


@dataclasses.dataclass(frozen=True)
class Framework:
    name: str  # the table's column
    runner: str  # the module run with ``python -m`` from the repository root; prints RESULT_PREFIX + JSON
    requirements: tuple[str, ...] = ()  # pinned; empty: the project's own environment

    @property
    def environment(self) -> Path:
        return PEERS_DIR / self.name.lower()


OURS = Framework("flaxvision", "benchmarks.run_flaxvision")
TF_KERAS = Framework(
    "TF-Keras",
    "benchmarks.run_keras",
    # scipy: ImageDataGenerator's affine transforms; pillow: flow_from_directory's decoding.
    ("tensorflow-cpu==2.21.0", "keras==3.15.1", "scipy==1.17.1", "pillow==13.0.0", "numpy==2.4.6"),
)
PYTORCH = Framework("PyTorch", "benchmarks.run_torch", ("torch==2.13.0", "numpy==2.4.6"))
PEERS = (TF_KERAS, PYTORCH)


class Missing(Exception):
    """The framework could not be installed or run; the message is the reason, one line."""


def python_of(framework: Framework) -> Path:
    """The interpreter that runs ``framework``, installing its environment on first use."""
    if not framework.requirements:
        return Path(sys.executable)
    environment = framework.environment
    python = environment / "bin" / "python"
    stamp = environment / "requirements.txt"  # written last: its presence means the install finished
    wanted = "\n".join(framework.requirements) + "\n"
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV
    if uv is None:
        raise Missing("uv is not on PATH (pip install uv==0.13.8)")
    print(
        f"installing {framework.name} into {environment.relative_to(ROOT)}: {' '.join(framework.requirements)}",
        file=sys.stderr,
        flush=True,
    )
    log = LOG_DIR / f"install-{environment.name}.log"
    _logged([uv, "venv", "--quiet", "--clear", "--seed", "--python", PEER_PYTHON, str(environment)], log, "uv venv")
    _logged([str(python), "-m", "pip", "install", "--quiet", *framework.requirements], log, "pip install", append=True)
    write_bytes(stamp, wanted.encode())
    return python


def run(framework: Framework, arguments: list[str], timeout_s: float) -> dict:
    """Run the framework's runner with ``arguments``; its JSON result. Raises Missing."""
    python = python_of(framework)
    log = LOG_DIR / f"run-{framework.runner.rsplit('.', 1)[-1]}.log"
    environment = os.environ | {
        "PYTHONPATH": str(ROOT),  # the runner imports benchmarks.workloads; peers need nothing else of ours
        "TQDM_DISABLE": "1",  # no progress bars in timed loops
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",  # tf.keras is Keras 3: its backend follows this variable
        "PYTHONUNBUFFERED": "1",
    }
    if framework.requirements:  # `uv run` points these at the project's environment
        for variable in ("VIRTUAL_ENV", "PYTHONHOME"):
            environment.pop(variable, None)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stderr:
        try:
            process = subprocess.run(
                [str(python), "-m", framework.runner, *arguments],
                cwd=ROOT,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise Missing(f"ran past {timeout_s:.0f} s (log: {log.relative_to(ROOT)})") from None
    for line in reversed(process.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise Missing(f"exited with status {process.returncode}: {_last_line(log)} (log: {log.relative_to(ROOT)})")


def _logged(command: list[str], log: Path, what: str, append: bool = False):
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a" if append else "w") as output:
        try:
            process = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise Missing(f"{what} ran past {INSTALL_TIMEOUT_S} s (log: {log.relative_to(ROOT)})") from None
    if process.returncode:
        raise Missing(f"{what} failed: {_last_line(log)} (log: {log.relative_to(ROOT)})")


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"

"""The command lines: every stage answers --help (from its docstring and dvc.yaml) without
running and takes no arguments; usage errors are one line."""

import runpy
import sys

import pytest

from flaxvision.export import main as export_main
from flaxvision.predict import main as predict_main
from tests.helpers import STAGES

# runpy re-runs a stage module that the test session has already imported: that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")


def run_as_command(module: str, *arguments: str, monkeypatch):
    """``python -m module arguments`` in this process (so the stage's imports are already loaded)."""
    monkeypatch.setattr(sys, "argv", [module, *arguments])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    return exited.value.code


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_answers_help_without_running(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: running the stage would fail
    module = STAGES[name]["cmd"].removeprefix("python -m ")
    assert run_as_command(module, "--help", monkeypatch=monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {module} [-h]")
    assert f"DVC stage {name} (dvc repro {name}). Reads params.yaml: " in out
    assert all(str(next(iter(o)) if isinstance(o, dict) else o) in out for o in STAGES[name].get("outs", []))
    assert list(tmp_path.iterdir()) == []


def test_a_stage_takes_no_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_as_command("stages.train", "--epochs", "3", monkeypatch=monkeypatch) == 2
    assert capsys.readouterr().err == (
        "error: unrecognized arguments: --epochs 3 (see python -m stages.train --help)\n"
    )


@pytest.mark.parametrize("command, main", [("predict", predict_main), ("export", export_main)])
def test_the_commands_answer_help(command, main, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {command} [-h]")

"""The command lines: every stage answers --help (from its docstring and dvc.yaml) without
running and takes no arguments; usage errors are one line."""

import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

from flaxvision.export import main as export_main
from flaxvision.predict import main as predict_main
from tests.helpers import STAGES, save_model

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


LONG = "x" * 300  # a file name the system refuses: longer than NAME_MAX
# Bad arguments to the commands, run in a folder with a model (model/), a file and a photo: the exit
# status and the start of the one line on stderr.
BAD_ARGUMENTS = {
    "predict, no model there": (predict_main, ["photo.png", "--model", "nothing"], 2, "error: no trained model in"),
    "predict, a file as model": (predict_main, ["photo.png", "--model", "afile"], 2, "error: no trained model in"),
    "predict, --top-k not a number": (predict_main, ["photo.png", "--top-k", "x"], 2, "error: argument --top-k"),
    "predict, --batch-size 0": (predict_main, ["photo.png", "--batch-size", "0"], 2, "error: --top-k and --batch"),
    "predict, --output in no folder": (
        predict_main,
        ["photo.png", "--model", "model", "--output", "afile/out.csv"],
        2,
        "error: --output afile/out.csv: not a file in an existing folder",
    ),
    "predict, --output name too long": (
        predict_main,
        ["photo.png", "--model", "model", "--output", f"{LONG}.csv"],
        2,
        f"error: --output {LONG}.csv: cannot write it (File name too long)",
    ),
    "predict, image name too long": (
        predict_main,
        [f"{LONG}.png", "--model", "model"],
        1,
        f"error: {LONG}.png: no such file",
    ),
    "export, no model there": (export_main, ["nothing"], 2, "error: no trained model in"),
    "export, a file as model": (export_main, ["afile"], 2, "error: no trained model in"),
    "export, --output a file": (export_main, ["model", "--output", "afile"], 2, "error: --output afile is a file"),
    "export, --output name too long": (
        export_main,
        ["model", "--output", LONG],
        2,
        f"error: --output {LONG}: cannot write it (File name too long)",
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("workspace")
    save_model(folder / "model", "belgiumtsc_cnn", (12, 16, 1))
    (folder / "afile").write_text("not a model\n")
    Image.new("RGB", (20, 20), (200, 30, 30)).save(folder / "photo.png")
    return folder


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_to_the_commands_are_one_error_line(case, workspace, monkeypatch, capsys):
    main, argv, status, error = BAD_ARGUMENTS[case]
    monkeypatch.chdir(workspace)
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's usage errors
        code = exited.code
    err = capsys.readouterr().err
    assert code == status and err.startswith(error) and err.count("\n") == 1, err
    assert sorted(path.name for path in workspace.iterdir()) == ["afile", "model", "photo.png"]  # nothing written

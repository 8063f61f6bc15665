"""The command lines: every stage answers --help (from its docstring and dvc.yaml) without
running and takes no arguments; `flaxvision` and its subcommands (predict, export, recipe,
params) answer --help; usage errors are one line. The seeds' recipes and the params reference."""

import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from dvc.utils.hydra import apply_overrides
from PIL import Image

from flaxvision.cli import SUBCOMMANDS
from flaxvision.cli import main as flaxvision_main
from flaxvision.export import main as export_main
from flaxvision.params import PARAMS_FILE, load_params, read_mapping
from flaxvision.predict import main as predict_main
from flaxvision.recipes import RECIPES_FILE, load_recipes, settings_arguments
from flaxvision.reference import REFERENCE_FILE, reference
from tests.helpers import PROJECT_ROOT, STAGES, save_model

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


@pytest.mark.parametrize("command", [[], *([name] for name in SUBCOMMANDS)])
def test_the_command_and_its_subcommands_answer_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        flaxvision_main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['flaxvision', *command])} [-h]")
    assert command or all(f"  {name} " in out for name in SUBCOMMANDS)


def test_an_unknown_subcommand_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exited:
        flaxvision_main(["predit", "photo.jpg"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: argument COMMAND: invalid choice: 'predit' (choose from 'predict', 'export', 'recipe', 'params') "
        "(see flaxvision --help)\n"
    )


# Params that say how a run is computed, not what it learns (the same weights either way): a recipe
# leaves them to params.yaml. Every other param is set by every recipe.
HOW_IT_RUNS = {"train.input", "train.device_data_mb", "train.checkpoint_steps", "extract_features.batch_size"}


def leaf_keys(params: dict, prefix: str = "") -> list[str]:
    return [
        key
        for name, value in params.items()
        for key in (leaf_keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"])
    ]


@pytest.mark.parametrize("name", load_recipes(PROJECT_ROOT / RECIPES_FILE))
def test_a_recipe_sets_every_param_that_decides_the_weights_as_dvc_applies_it(name, tmp_path, monkeypatch):
    settings = load_recipes(PROJECT_ROOT / RECIPES_FILE)[name]
    decisive = {key for key in leaf_keys(read_mapping(PROJECT_ROOT / PARAMS_FILE)) if not key.startswith("evaluate.")}
    assert sorted(decisive - HOW_IT_RUNS - set(settings)) == []

    # DVC's own parsing of the -S arguments, into a copy of params.yaml: each value as the recipe says.
    shutil.copy(PROJECT_ROOT / PARAMS_FILE, tmp_path / PARAMS_FILE)
    arguments = settings_arguments(settings)
    apply_overrides(tmp_path / PARAMS_FILE, arguments[1::2])
    applied = read_mapping(tmp_path / PARAMS_FILE)
    for key, value in settings.items():
        section, _, field = key.rpartition(".")
        assert (applied[section][field] if section else applied[key]) == value, key
    load_params(tmp_path / PARAMS_FILE)  # and the whole file passes the schema


def test_the_recipe_command_runs_dvc_exp_run_with_the_recipes_settings(monkeypatch, capsys):
    monkeypatch.chdir(PROJECT_ROOT)
    assert flaxvision_main(["recipe", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in listed] == list(load_recipes())
    assert "seed004-resnet50: model=resnet50 data=signs" in listed

    assert flaxvision_main(["recipe", "seed004-resnet50", "--dry-run", "--queue"]) == 0
    command = shlex.split(capsys.readouterr().out)
    assert command[:5] == ["dvc", "exp", "run", "-n", "seed004-resnet50"] and command[-1] == "--queue"
    assert command[5:9] == ["-S", "model=resnet50", "-S", "data=signs"]
    assert "train.min_learning_rate=1e-05" in command  # params.yaml's reader takes it as a float, as DVC does

    assert flaxvision_main(["recipe", "seed9"]) == 2
    assert capsys.readouterr().err.startswith("error: no recipe 'seed9' in recipes.yaml; recipes: seed000-cnn, ")


def test_the_params_reference_is_up_to_date():
    """docs/params.md is what `flaxvision params --write` writes from today's schema and params.yaml."""
    expected = reference(PROJECT_ROOT / PARAMS_FILE)
    assert (PROJECT_ROOT / REFERENCE_FILE).read_text() == expected, "run `uv run flaxvision params --write`"
    rows = [line.split(" | ") for line in expected.splitlines() if line.startswith("| `")]
    assert [row[0].strip("|` ") for row in rows] == leaf_keys(read_mapping(PROJECT_ROOT / PARAMS_FILE))
    assert all(row[3].strip(" |") for row in rows), "a key without a comment in params.yaml"


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

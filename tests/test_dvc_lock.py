"""What is committed is true: dvc.lock's hashes of code, params and results are those of the files.

DVC compares them in a copy of the project's files as git sees them (so neither data the workspace
holds nor an experiment applied to it counts). Data that a fresh clone lacks ("deleted", "not in
cache") is fine; anything else that differs means dvc.lock and results/ are stale: run `dvc repro`
and commit dvc.lock and results/ with the change.
"""

import json
import subprocess
import sys

import pytest

from tests.helpers import copy_checkout

pytestmark = pytest.mark.slow
ABSENT = {"deleted", "not in cache"}


def stale_entries(status: dict) -> list[str]:
    """'stage: path (what)' for every difference that is not just absent data."""
    stale = []
    for stage, entries in status.items():
        for entry in entries:
            if entry == "always changed":
                continue
            if not isinstance(entry, dict):
                stale.append(f"{stage}: {entry}")
                continue
            for kind, changes in entry.items():
                if not isinstance(changes, dict):
                    stale.append(f"{stage}: {kind}")
                    continue
                stale += [f"{stage}: {kind} {path} ({what})" for path, what in changes.items() if what not in ABSENT]
    return stale


def test_dvc_lock_matches_the_committed_code_params_and_results(tmp_path):
    copy_checkout(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    stale = stale_entries(json.loads(result.stdout))
    assert not stale, "dvc.lock is stale (run `dvc repro`, commit dvc.lock and results/): " + "; ".join(stale)

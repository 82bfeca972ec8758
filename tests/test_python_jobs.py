"""``jobs`` from Python: worker processes are spawned and import the caller's main script again, so a script that
calls edgedistill outside ``if __name__ == "__main__":`` is refused with the fix instead of running its call again in
every worker; and a Python call's run records (and prints, when interrupted) the ``edgedistill run`` command that
resumes it."""
import sys
import types

import pytest

from edgedistill.errors import UserInputError
from edgedistill.experiment import rundir, workers


@pytest.mark.parametrize("text, refused", [
    ("import edgedistill\nedgedistill.run('kd', jobs=2)\n", True),
    ("import edgedistill\nif __name__ == '__main__':\n    edgedistill.run('kd', jobs=2)\n", False),
    ('import edgedistill\nif "__main__" == __name__:\n    edgedistill.run("kd", jobs=2)\n', False),
])
def test_a_script_without_a_main_guard_is_refused_before_a_worker_starts(tmp_path, monkeypatch, text, refused):
    script = tmp_path / "train.py"
    script.write_text(text)
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    if not refused:
        workers.check_main_guarded(2)
        return
    with pytest.raises(UserInputError, match="train.py.*if __name__ == \"__main__\":"):
        workers.check_main_guarded(2)
    pool = workers.Workers(2, target=dict, local=True)
    with pytest.raises(UserInputError):
        pool.prestart(2)  # the thread slot is this process; the refusal comes before the worker process
    assert pool.idle[0][0].__class__.__name__ == "_LocalSlot" and len(pool.idle) == 1
    pool.close(kill=True)


def test_an_interactive_session_has_nothing_to_import_again(monkeypatch):
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace())
    workers.check_main_guarded(2)


def test_a_call_made_while_a_worker_imports_the_script_is_refused(monkeypatch, tmp_path):
    import multiprocessing

    import edgedistill

    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(UserInputError, match="importing your script again"):
        edgedistill.run("quickstart", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_python_call_is_recorded_as_the_command_that_resumes_it():
    assert rundir.cli_equivalent("recipes/kd.yaml", {"seeds": [0, 1], "train.epochs": 2, "report.plots": False}, True) == (
        "edgedistill run recipes/kd.yaml 'seeds=[0, 1]' train.epochs=2 report.plots=false --smoke")
    assert rundir.cli_equivalent({"name": "x"}, ["train.lr=0.1"], False) == "edgedistill run '<dict>' train.lr=0.1"

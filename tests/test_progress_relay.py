"""A stage's display in a --jobs worker (ForwardedProgress) is shown by the run's process (StageProgress.relay): the
same lines or bars as a stage of its own, named by its job, with steps summed, and nothing but display calls run."""
import io

from rich.console import Console

from edgedistill.progress import ForwardedProgress, StageProgress


def _display(terminal: bool):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=200, color_system=None)
    return buf, StageProgress(enabled=True, console=console, prefix="[trial 3] ")


def _worker_stage(show, key):
    sent = []
    prog = ForwardedProgress(lambda event: (sent.append(event), show(key, event)))
    prog.message("teacher seed 1: reused from cache")
    prog.start("offline seed 1", total_steps=30, done=10, epochs=3)
    for _ in range(20):
        prog.advance()
    prog.note("val acc 0.5")
    prog.finish("test acc 0.600 (best epoch 3)")
    return sent


def test_plain_lines_of_a_worker_stage_are_those_of_a_stage_of_its_own():
    buf, display = _display(False)
    with display:
        sent = _worker_stage(display.relay(lambda key: f"[seed {key}] "), 1)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "[trial 3] [seed 1] teacher seed 1: reused from cache"
    assert lines[1] == "[trial 3] [seed 1] offline seed 1: started (3 epochs, resuming at epoch 1/3)"
    assert lines[2].startswith("[trial 3] [seed 1] offline seed 1: epoch 3/3, test acc 0.600 (best epoch 3), ")
    # 20 steps in at most a few messages: summed between sends, flushed before the note
    advances = [args[0] for call, args in sent if call == "advance"]
    assert sum(advances) == 20 and len(advances) <= 2


def test_a_bar_per_worker_stage_keeps_its_bracketed_name():
    buf, display = _display(True)
    with display:
        show = display.relay(lambda key: f"[seed {key}] ")
        _worker_stage(show, 0)
        _worker_stage(show, 1)
    text = buf.getvalue()
    for seed in (0, 1):  # rich markup would swallow "[seed 1]" if the label were not escaped
        assert f"[trial 3] [seed {seed}] offline seed 1" in text
    assert "30/30" in text


def test_only_display_calls_are_run():
    buf, display = _display(False)
    with display:
        show = display.relay(lambda key: "")
        show(0, ("__init__", (False,)))
        show(0, ("_line", ("injected",)))
        show(0, ("message", ("said",)))
    assert buf.getvalue().splitlines() == ["[trial 3] said"]

import pytest

from edgedistill.experiment.report import aggregate, gap_closed, markdown, mean_std, verdict


def _seed(acc):
    m = {"acc": acc, "f1": acc, "ece": 0.1, "nll": 1.0}
    return {"test": {"best": m, "last": {**m, "acc": acc - 0.1}}, "val": {"best": m, "last": m}}


def test_mean_and_sample_std():
    s = mean_std([0.5, 0.7, 0.9])
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.2) and s["n"] == 3
    assert mean_std([0.4])["std"] == 0.0


def test_aggregate_reports_the_selected_checkpoint():
    seeds = [_seed(0.8), _seed(0.9)]
    assert aggregate(seeds, "best")["acc"]["mean"] == pytest.approx(0.85)
    assert aggregate(seeds, "last")["acc"]["mean"] == pytest.approx(0.75)


def test_gap_closed():
    assert gap_closed(0.85, 0.8, 0.9) == pytest.approx(0.5)
    assert gap_closed(0.75, 0.8, 0.9) == pytest.approx(-0.5)
    assert gap_closed(0.9, 0.9, 0.9) is None  # no gap to close
    assert gap_closed(0.95, 0.968, 0.975, noise=0.01) is None  # a gap inside the noise


def _summary(alone, method):
    rows = []
    for role, accs in (("student alone", alone), ("method", method)):
        per = [_seed(a) for a in accs]
        rows.append({"model": f"m-{role}", "role": role, "params": 10, "size_kb": 0.1,
                     "metrics": aggregate(per, "best"), "per_seed_test": [p["test"]["best"] for p in per]})
    return {"name": "t", "task": "classification", "select": "best", "seeds": [0, 1, 2], "rows": rows,
            "data": {"name": "d", "sizes": {"train": 1, "val": 1, "test": 1}, "split_by": "subject"}, "command": "x"}


def test_verdict_says_plainly_when_distillation_did_not_help():
    assert "did not beat" in verdict(_summary([0.8, 0.8, 0.8], [0.7, 0.75, 0.8]))
    assert "within the seeds' spread" in verdict(_summary([0.7, 0.8, 0.9], [0.75, 0.85, 0.9]))
    clear = verdict(_summary([0.70, 0.71, 0.72], [0.80, 0.81, 0.82]))
    assert "beat the student alone" in clear and "won on 3 of 3 seeds" in clear


def test_markdown_names_the_checkpoint_and_seeds():
    text = markdown(_summary([0.8, 0.8, 0.8], [0.7, 0.75, 0.8]))
    assert "**best** checkpoint" in text and "[0, 1, 2]" in text and "0.750 ± 0.050" in text


def test_verdict_names_a_teacher_worse_than_the_student_alone_on_validation():
    summary = _summary([0.8, 0.82, 0.84], [0.7, 0.72, 0.74])
    for r in summary["rows"]:
        r["val_metrics"] = r["metrics"]
    teacher = [_seed(a) for a in (0.5,)]
    summary["rows"].insert(0, {"model": "pi: cnn2d", "role": "teacher", "params": 10, "size_kb": 0.1,
                               "metrics": aggregate(teacher, "best"), "val_metrics": aggregate(teacher, "best"),
                               "per_seed_test": [teacher[0]["test"]["best"]]})
    text = verdict(summary)
    assert "did not beat" in text and "pi: cnn2d 0.500" in text and "0.820 acc" in text
    summary["rows"][0]["val_metrics"] = aggregate([_seed(0.81)], "best")  # within the student's spread: no warning
    assert "Teacher(s)" not in verdict(summary)


def test_markdown_lists_the_channels_used_and_what_the_loader_inferred():
    summary = _summary([0.8, 0.8, 0.8], [0.7, 0.75, 0.8])
    assert "Channels used" not in markdown(summary)  # a summary written before channels were recorded
    summary["data"] = {**summary["data"], "channels": [f"acc_{i}" for i in range(40)],
                       "notes": ["rows sorted by column 'time' within each group (3 were out of order)"]}
    text = markdown(summary)
    assert "Channels used (40): acc_0, acc_1" in text and "acc_31, ... (8 more)" in text and "acc_32" not in text
    assert "Data note: rows sorted by column 'time'" in text

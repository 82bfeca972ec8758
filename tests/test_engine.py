import json

import pytest
import torch

from edgedistill.config import EngineConfig, TermConfig, TrainConfig
from edgedistill.engine import checkpoint as ckpt
from edgedistill.engine.loop import Stage, Trainer, lr_factor
from edgedistill.errors import TrainingDiverged, UserInputError
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.methods.supervised import Supervised
from tests.helpers import tiny_net, toy_splits

ENGINE = EngineConfig(progress=False)


def _fit(tmp_path, epochs, seed=0, name="stage", dropout=0.3):
    splits = toy_splits()
    torch.manual_seed(seed)
    method = Supervised(tiny_net(dropout=dropout), splits.info)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-2)
    return Trainer(ENGINE).fit(method, splits, Stage(name, tmp_path / name, seed, cfg)), method


def test_training_learns_and_writes_the_stage(tmp_path):
    summary, _ = _fit(tmp_path, 8)
    stage = tmp_path / "stage"
    lines = [json.loads(l) for l in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == list(range(1, 9))
    assert set(lines[0]["train"]) == {"ce", "total"} and "acc" in lines[0]["val"]
    assert lines[-1]["train"]["ce"] < lines[0]["train"]["ce"]
    assert summary["test"]["best"]["acc"] > 0.6  # chance is 1/3
    assert 1 <= summary["best_epoch"] <= 8
    for f in ("summary.json", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (stage / f).is_file()
    assert not list(stage.rglob("*.tmp"))


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    straight, m1 = _fit(tmp_path, 6, name="straight")
    # Run 3 epochs, then "restart the process" with the full budget in the same directory.
    cfg3 = TrainConfig(epochs=6, batch_size=16, lr=1e-2)
    splits = toy_splits()
    torch.manual_seed(0)
    method = Supervised(tiny_net(dropout=0.3), splits.info)

    class Interrupt(Exception):
        pass

    trainer = Trainer(ENGINE)
    real_save = trainer._save_last

    def save_then_stop(method_, opts, ckdir, epoch, best, best_epoch):
        real_save(method_, opts, ckdir, epoch, best, best_epoch)
        if epoch == 3:
            raise Interrupt

    trainer._save_last = save_then_stop
    with pytest.raises(Interrupt):
        trainer.fit(method, splits, Stage("r", tmp_path / "resumed", 0, cfg3))
    torch.manual_seed(123)  # a different global RNG state: resume must restore it
    method2 = Supervised(tiny_net(dropout=0.3), splits.info)
    resumed = Trainer(ENGINE).fit(method2, splits, Stage("r", tmp_path / "resumed", 0, cfg3))
    for a, b in zip(m1.networks["student"].state_dict().values(), method2.networks["student"].state_dict().values()):
        assert torch.equal(a, b)
    assert resumed["test"] == straight["test"] and resumed["best_epoch"] == straight["best_epoch"]
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == list(range(1, 7))


def test_resume_drops_a_log_line_cut_short_by_a_kill(tmp_path):
    from edgedistill.engine.loop import _truncate_log

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')
    _truncate_log(log, 2)
    assert log.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    splits = toy_splits()
    method = OfflineDistillation(tiny_net(), splits.info, tiny_net(), [TermConfig(loss="ce", weight=1.0), TermConfig(loss="kd", weight=1.0)])
    calls = {"n": 0}
    real_step = method.training_step

    def poisoned(batch, step):
        terms = real_step(batch, step)
        calls["n"] += 1
        if step.epoch == 2:
            terms["kd"] = terms["kd"] * float("nan")
        return terms

    method.training_step = poisoned
    stage = Stage("kd seed 0", tmp_path / "nan", 0, TrainConfig(epochs=5, batch_size=16))
    with pytest.raises(TrainingDiverged, match=r"kd seed 0: loss term\(s\) 'kd' became non-finite at epoch 3"):
        Trainer(ENGINE).fit(method, splits, stage)
    last = ckpt.load(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert last["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in last["networks"]["student"].values() if v.is_floating_point())


def test_teacher_outputs_are_cached_once_and_frozen(tmp_path):
    splits = toy_splits()
    teacher = tiny_net()
    calls = {"n": 0}
    teacher.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    method = OfflineDistillation(tiny_net(), splits.info, teacher, [TermConfig(loss="kd", weight=1.0)])
    Trainer(ENGINE).fit(method, splits, Stage("kd", tmp_path / "kd", 0, TrainConfig(epochs=3, batch_size=16)))
    assert calls["n"] == 1  # one batched pass over the 57 training rows, none per step
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_lr_schedules():
    cos = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(cos, 0, 100, 0) == 1.0 and lr_factor(cos, 100, 100, 9) == pytest.approx(0.0)
    step = TrainConfig(epochs=10, schedule="step", milestones=[0.5], gamma=0.1)
    assert lr_factor(step, 0, 100, 4) == 1.0 and lr_factor(step, 0, 100, 5) == pytest.approx(0.1)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_are_weights_only(tmp_path):
    path = tmp_path / "x.pt"
    ckpt.save(path, {"w": torch.ones(2), "rng": ckpt.rng_state()})
    assert torch.equal(ckpt.load(path)["w"], torch.ones(2))
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(UserInputError, match="weights-only"):
        ckpt.load(tmp_path / "evil.pt")


def test_outputs_by_batch_matches_a_whole_pass_in_row_order():
    from edgedistill.engine.evaluate import outputs_by_batch

    splits = toy_splits()
    net = tiny_net().eval()
    with torch.no_grad():
        whole = net(splits.train.x)
        # 7 does not divide the split: the last, shorter batch must land in the last rows.
        parts = outputs_by_batch(net, splits.train, "x", torch.device("cpu"), batch_size=7)
    assert len(splits.train) % 7 != 0
    assert parts.shape == whole.shape
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    empty = outputs_by_batch(net, splits.train.subset(torch.arange(0)), "x", torch.device("cpu"))
    assert empty.numel() == 0


def test_final_test_metrics_carry_the_validation_fitted_temperature():
    from edgedistill.engine.evaluate import evaluate_val_test
    from edgedistill.metrics import ece, fit_temperature

    splits = toy_splits()
    net = tiny_net().eval()
    val, test = evaluate_val_test(net, splits.val, splits.test, splits.info, torch.device("cpu"))
    with torch.no_grad():
        zv, zt = net(splits.val.x), net(splits.test.x)
    t = fit_temperature(zv, splits.val.y)  # fitted on validation, applied to test
    assert test["temperature"] == pytest.approx(t) and test["ece_ts"] == pytest.approx(ece(zt / t, splits.test.y), abs=1e-6)
    assert "ece_ts" not in val and set(test) - set(val) == {"ece_ts", "temperature"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal is for machines without it")
def test_an_accelerator_this_machine_lacks_is_refused_before_anything_is_written(tmp_path):
    from tests.helpers import cli_run

    out = tmp_path / "run"
    result = cli_run("quickstart", "--smoke", "engine.accelerator=cuda", "--out", out)
    assert result.exit_code == 2 and "engine.accelerator: 'cuda'" in result.output and not out.exists()


def test_to_device_keeps_cpu_batches_as_they_are():
    from edgedistill.engine.loop import to_device

    batch = {"x": torch.ones(2, 3), "y": torch.zeros(2, dtype=torch.long)}
    moved = to_device(batch, torch.device("cpu"))
    assert all(moved[k] is batch[k] for k in batch)  # .to() of the same device: no copy

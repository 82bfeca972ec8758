"""A frozen network's pass over a split is done once per run (data/shared_outputs.py), and only when nothing that
decides its result changed: the weights, the mode, the rows, the view, the device or what the caller computes."""
import torch

from edgedistill.data.dataset import TensorData
from edgedistill.data.shared_outputs import MAX_ENTRIES, outputs_once, shared_outputs
from edgedistill.engine.evaluate import predict
from tests.helpers import tiny_net


def _data(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorData({"x": torch.randn(n, 3, 16, generator=g)}, torch.zeros(n, dtype=torch.long))


def _counted(net, data, calls, tag="t", view="x"):
    def compute():
        calls.append(1)
        with torch.no_grad():
            return net(data.views[view])
    return outputs_once(net, data, view, torch.device("cpu"), tag, compute)


def test_outside_a_block_every_request_computes():
    net, data, calls = tiny_net().eval(), _data(), []
    _counted(net, data, calls)
    _counted(net, data, calls)
    assert len(calls) == 2


def test_the_same_weights_on_the_same_rows_are_computed_once_even_rebuilt():
    torch.manual_seed(0)
    net, data, calls = tiny_net().eval(), _data(), []
    with shared_outputs():
        first = _counted(net, data, calls)
        first.add_(100.0)  # the caller's copy: the shared result is not changed by it
        rebuilt = tiny_net().eval()  # a new module object, as the report builds one from the weights file
        rebuilt.load_state_dict(net.state_dict())
        again = _counted(rebuilt, data, calls)
    assert len(calls) == 1
    with torch.no_grad():
        assert torch.equal(again, net(data.x))


def test_whatever_decides_the_result_makes_a_new_request():
    net, data, calls = tiny_net().eval(), _data(), []
    with shared_outputs():
        _counted(net, data, calls)
        with torch.no_grad():
            next(net.parameters()).add_(0.1)  # a training step
        _counted(net, data, calls)
        _counted(net.train(), data, calls)  # train mode (dropout, batch statistics)
        net.eval()
        _counted(net, _data(), calls)  # equal values, other rows
        data.views["x"].mul_(2.0)  # the rows changed in place
        _counted(net, data, calls)
        _counted(net, data, calls, tag="other")  # another caller computes something else from the pass
        assert len(calls) == 6
        _counted(net, data, calls)  # and unchanged again: shared
    assert len(calls) == 6


def test_a_students_per_epoch_passes_never_evict_the_teachers_entry():
    teacher, data, calls = tiny_net().eval(), _data(), []
    with shared_outputs():
        _counted(teacher, data, calls, tag="teacher")
        for epoch in range(MAX_ENTRIES + 5):
            student = tiny_net(width=4 + epoch % 3).eval()
            predict(student, data, torch.device("cpu"))
        _counted(teacher, data, calls, tag="teacher")
    assert len(calls) == 1


def test_an_unshared_block_neither_reads_nor_fills_the_store():
    from edgedistill.data.shared_outputs import unshared

    net, data, calls = tiny_net().eval(), _data(), []
    with shared_outputs() as store:
        _counted(net, data, calls)
        with unshared():
            _counted(net, data, calls)
            _counted(net, _data(seed=1), calls)
        assert len(store["t"]) == 1
        _counted(net, data, calls)  # the block's end restores sharing
    assert len(calls) == 3


def test_the_store_keeps_at_most_its_byte_budget_per_tag(monkeypatch):
    from edgedistill.data import shared_outputs as so

    net, calls = tiny_net().eval(), []
    monkeypatch.setattr(so, "MAX_BYTES", 10 * 3 * 4 * 2)  # two results of 10 rows x 3 classes, float32
    datas = [_data(seed=s) for s in range(3)]
    with shared_outputs() as store:
        for d in datas:
            _counted(net, d, calls)
        assert len(store["t"]) == 2  # the oldest went out
        _counted(net, datas[2], calls)  # kept
        _counted(net, datas[0], calls)  # evicted: computed again
        monkeypatch.setattr(so, "MAX_BYTES", 10)  # a result larger than the whole budget is never kept
        _counted(net, _data(seed=9), calls)
        assert len(store["t"]) == 2
    assert len(calls) == 5


def test_a_kd_run_passes_the_teacher_over_the_training_rows_once_for_every_seed(tmp_path, monkeypatch):
    from edgedistill.experiment.runner import run
    from edgedistill.methods import teachers
    from edgedistill.shipped_recipes import shipped_dir

    real, sizes = teachers.outputs_by_batch, []

    def counting(fn, data, view, device, batch_size=256):
        sizes.append(len(data))
        return real(fn, data, view, device, batch_size)

    monkeypatch.setattr(teachers, "outputs_by_batch", counting)
    summary = run(shipped_dir() / "quickstart.yaml", ["data.name=basicmotions", "seeds=[0, 1, 2]", "train.epochs=1", "teacher.train.epochs=1",
                                 "baseline=false", "report.profile=false", "report.plots=false", "engine.threads=1"],
                  out=tmp_path / "run", progress=False)
    assert len(summary["rows"]) == 2
    assert len(sizes) == 1, sizes  # seeds 1 and 2 read seed 0's pass


def test_a_frozen_reported_network_is_validated_once_per_run_and_a_trained_one_every_epoch():
    """epoch_scores: the deliverable and a reported network that trains (a peer) are evaluated every epoch; a reported
    network with nothing to train (multi_teacher's teacher ensemble) once, and its numbers are the same every epoch."""
    from edgedistill.data.dataset import DataInfo
    from edgedistill.engine.evaluate import epoch_scores

    data, calls = _data(), {"student": 0, "peer": 0, "ensemble": 0}
    nets = {name: tiny_net() for name in calls}
    for name, net in nets.items():
        net.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    nets["ensemble"].requires_grad_(False)
    info = DataInfo(name="t", task="classification", input_shape=(3, 16), n_outputs=3)
    with shared_outputs():
        seen = [epoch_scores(nets["student"], {"peer": nets["peer"], "ensemble": nets["ensemble"]}, data, info,
                             torch.device("cpu")) for _ in range(4)]
    assert calls == {"student": 4, "peer": 4, "ensemble": 1}
    assert all(s[1]["ensemble"] == seen[0][1]["ensemble"] for s in seen) and list(seen[0][1]) == ["peer", "ensemble"]

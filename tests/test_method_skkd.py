"""skkd: the cross-view check, the default terms (CE + KD + similarity keeping on the pooled embeddings), the SK
term through the method on the vector of tests/reference/ref_asu.py sections 9 and 12, a frozen teacher on its
own view, the clear errors, and one end-to-end run on synthetic data with channel views."""
import json

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.config import TermConfig, load_recipe
from edgedistill.data.dataset import DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses import ce, kd
from edgedistill.losses.sequence import similarity_keeping
from edgedistill.methods.base import Step
from edgedistill.methods.skkd import SKKD, default_terms
from edgedistill.models import build_model
from edgedistill.registry import METHODS

D = torch.float64
# tests/reference/ref_asu.py sections 9 and 12: F_S (B=3, 2 dims), F_T (B=3, 3 dims);
# L_SK = 0.0224171797 (cosine), 0.0754932783 (sp).
FS = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]], dtype=D)
FT = torch.tensor([[1.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=D)


class Rows(nn.Module):
    """A network whose pooled embedding for input row i is row i of ``feats`` (x[:, 0, 0] holds i); it checks that
    it reads the expected number of channels, so the test fails if it is fed the wrong view."""

    def __init__(self, feats: torch.Tensor, channels: int, classes: int = 3) -> None:
        super().__init__()
        self.feats, self.channels = nn.Parameter(feats.clone()), channels
        self.pool = nn.Identity()
        self.head = nn.Linear(feats.shape[1], classes).to(feats.dtype)
        self.default_taps = {"emb": "pool"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels, f"fed {x.shape[1]} channels, expected {self.channels}"
        return self.head(self.pool(self.feats[x[:, 0, 0].long()]))


def _info(classes: int = 3, length: int = 8) -> DataInfo:
    return DataInfo(name="toy", task="classification", input_shape=(3, length), n_outputs=classes,
                    classes=[str(c) for c in range(classes)], views={"x": (3, length), "full": (6, length)},
                    sizes={"train": 3})


def _row_batch(n: int = 3, length: int = 8) -> dict:
    full = torch.zeros(n, 6, length, dtype=D)
    full[:, 0, 0] = torch.arange(n, dtype=D)
    return {"x": full[:, :3].clone(), "full": full, "y": torch.tensor([1, 2, 0]), "index": torch.arange(n)}


STEP = Step(epoch=0, step=0, epochs=1, steps_per_epoch=1)


def test_registered():
    assert METHODS.get("skkd") is SKKD


@pytest.mark.parametrize("form,expected", [("cosine", 0.0224171797), ("sp", 0.0754932783)])
def test_sk_term_through_the_method_on_the_spec_vector(form, expected):
    """With the CE and KD weights at 0 the method's loss is L_SK of the pooled embeddings: the reference vector."""
    student, teacher = Rows(FS, channels=3), Rows(FT, channels=6)
    terms = default_terms(form=form, ce_weight=0.0, kd_weight=0.0, sk_weight=1.0)
    assert [t.loss for t in terms] == ["similarity_keeping"]
    m = SKKD(student, _info(), teacher, terms, teacher_view="full")
    out = m.training_step(_row_batch(), STEP)
    assert set(out) == {"similarity_keeping"}
    assert float(out["similarity_keeping"].detach()) == pytest.approx(expected, abs=1e-6)


def test_default_terms_are_ce_kd_and_cosine_sk_on_the_embeddings():
    terms = default_terms()
    assert [(t.loss, t.weight) for t in terms] == [("ce", 0.1), ("kd", 0.9), ("similarity_keeping", 1.0)]
    assert terms[1].params == {"temperature": 4.0}
    assert terms[2].params == {"form": "cosine", "student_tap": "emb", "teacher_tap": "emb"}


def test_default_loss_matches_the_formula_on_zoo_models():
    """Summed terms = 0.1 CE + 0.9 KD(T=4) + L_SK(pooled student emb, pooled teacher emb), teacher on 'full'."""
    torch.manual_seed(0)
    student = build_model("cnn1d", 3, 3, (16,), width=8, head="segments")
    teacher = build_model("fcn", 6, 3, (16,), width=0.125)
    info = _info(length=16)
    m = SKKD(student, info, teacher, [], teacher_view="full")
    assert m.cache_teacher  # setup() caches its tapped embeddings by row with the logits (not called here: live)
    g = torch.Generator().manual_seed(1)
    full = torch.randn(8, 6, 16, generator=g)
    batch = {"x": full[:, :3], "full": full, "y": torch.randint(0, 3, (8,), generator=g), "index": torch.arange(8)}
    student.eval()  # BatchNorm in eval so the reference forward below sees the same numbers
    out = m.training_step(batch, STEP)
    grabbed = {}
    hs = student.pool.register_forward_hook(lambda mod, i, o: grabbed.__setitem__("s", o))
    ht = teacher.pool.register_forward_hook(lambda mod, i, o: grabbed.__setitem__("t", o))
    zs = student(batch["x"])
    with torch.no_grad():
        zt = teacher(batch["full"])
    hs.remove(), ht.remove()
    want = 0.1 * ce(zs, batch["y"]) + 0.9 * kd(zs, zt, 4.0) + similarity_keeping(grabbed["s"], grabbed["t"], "cosine")
    assert float(sum(out.values()).detach()) == pytest.approx(float(want.detach()), abs=1e-5)
    assert set(out) == {"ce", "kd", "similarity_keeping"}


def test_same_view_teacher_is_refused_and_points_to_offline():
    with pytest.raises(UserInputError, match=r"^teacher\.view: .*'offline'"):
        SKKD(Rows(FS, 3), _info(), Rows(FT, 3), [], teacher_view="x")
    with pytest.raises(UserInputError, match=r"^teacher:"):
        SKKD(Rows(FS, 3), _info(), None, [], teacher_view="full")
    with pytest.raises(UserInputError, match=r"^teacher\.view: the dataset has no view 'depth'"):
        SKKD(Rows(FS, 3), _info(), Rows(FT, 6), [], teacher_view="depth")


def test_custom_terms_need_similarity_keeping_and_bad_params_fail():
    with pytest.raises(UserInputError, match=r"^method\.terms: .*similarity_keeping"):
        SKKD(Rows(FS, 3), _info(), Rows(FT, 6), [TermConfig(loss="ce"), TermConfig(loss="kd")], teacher_view="full")
    custom = [TermConfig(loss="ce"), TermConfig(loss="similarity_keeping", form="sp", student_tap="emb", teacher_tap="emb")]
    m = SKKD(Rows(FS, 3), _info(), Rows(FT, 6), custom, teacher_view="full")
    assert [t.label for t in m.terms] == ["ce", "similarity_keeping"]
    for params, message in (({"form": "gram"}, r"^method\.params\.form: .*'cosine' or 'sp'"),
                            ({"sk_weight": 0.0}, r"^method\.params\.sk_weight: .*'offline'"),
                            ({"kd_weight": -1.0}, r"^method\.params\.kd_weight: .*greater than or equal to 0"),
                            ({"ce_weight": True}, r"^method\.params\.ce_weight: .*valid number"),
                            ({"temperature": 0}, r"^method\.params\.temperature: .*greater than 0")):
        with pytest.raises(UserInputError, match=message):
            SKKD(Rows(FS, 3), _info(), Rows(FT, 6), [], teacher_view="full", **params)


def _recipe(view: str = "full", method: dict | None = None, **data) -> dict:
    return {
        "name": "skkd-test",
        "data": {"name": "synthetic", "params": {"channels": 6, "n_subjects": 3, "windows_per_subject": 8,
                                                   "n_classes": 3, "length": 24},
                 "views": {"x": [0, 1, 2], "full": [0, 1, 2, 3, 4, 5]}, "split": {"by": "stratified"}, **data},
        "teacher": {"model": "cnn1d", "width": 8, "view": view, "train": {"epochs": 1, "batch_size": 8}},
        "student": {"model": "cnn1d", "width": 4},
        "method": method or {"name": "skkd"},
        "train": {"epochs": 1, "batch_size": 8},
        "baseline": False,
    }


def test_recipe_errors_name_the_key():
    with pytest.raises(UserInputError, match=r"^teacher\.view: .*use method 'offline'"):
        edgedistill.run(_recipe(view="x"), out="r1", progress=False)
    terms = [{"loss": "ce"}, {"loss": "similarity_keeping"}]
    with pytest.raises(UserInputError, match=r"^method\.params\.form: only shapes the default terms"):
        edgedistill.run(_recipe(method={"name": "skkd", "terms": terms, "params": {"form": "sp"}}), out="r2", progress=False)
    with pytest.raises(UserInputError, match=r"^method\.params\.weight: unknown parameter"):
        edgedistill.run(_recipe(method={"name": "skkd", "params": {"weight": 1}}), out="r3", progress=False)


def test_end_to_end_cross_view_run(tmp_path):
    """The student reads 3 channels, the teacher 6; the run trains, logs all three terms and reports."""
    recipe = _recipe(method={"name": "skkd", "params": {"form": "sp"}})
    assert load_recipe(recipe).method.params == {"form": "sp"}
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "skkd" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert {"ce", "kd", "similarity_keeping"} <= set(log[-1]["train"])
    assert summary["rows"][-1]["model"].endswith("skkd")
    done = json.loads((tmp_path / "run" / "skkd" / "seed0" / "summary.json").read_text())
    assert done["method"]["teacher_view"] == "full"
    assert [t["form"] for t in done["method"]["terms"] if t["loss"] == "similarity_keeping"] == ["sp"]

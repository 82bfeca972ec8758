"""cGAN-KD: knowledge passed to the student through teacher-processed synthetic samples, not through a loss.

Ding, Wang, Xu, Wang, Welch, "Distilling and Transferring Knowledge via cGAN-generated Samples for Image
Classification and Regression", Expert Systems with Applications 213:119060 (2023), arXiv 2104.03164.
``setup`` runs the pipeline once, before the student trains:

1. train a conditional GAN (``models/cgan.py``: hinge loss, projection discriminator) on the training set;
2. cDR-RS: a conditional density-ratio net r(phi(x), y) >= 0 is fitted with the Softplus divergence
   ``L = mean_f[sig(r_f) r_f] - mean_f[softplus(r_f)] - mean_r[sig(r_r)] + lambda (mean_f r_f - 1)^2`` (real
   vs. generated samples with the real batch's conditions); then, per class (one global pool for regression),
   ``burn_in`` samples give M = max r and every later sample is accepted with probability r / M, M being
   raised to any larger r seen (a running max);
3. filtering: the teacher's loss on each sample at its condition (CE for classes, MAE for targets); the
   cutoff is the rho-quantile (linear interpolation) of the burn-in samples' losses, per class for
   classification, global for regression; a sample is kept iff its loss < cutoff (strict);
4. relabelling: each kept sample's label becomes the teacher's prediction (argmax, or the predicted target);
5. the student trains with ordinary CE (or MSE) on real and synthetic samples together.

Our choices where the spec says UNKNOWN or where the paper's setting does not fit small sensor data:
* phi (the feature space of the density ratio) is, as in the paper, a separately trained network's embedding:
  ``feature_net: separate`` (default) trains a fresh copy of the teacher's architecture on the real training
  labels (CE or MSE; the teacher's own ``train`` settings at a constant learning rate, or ``feature_epochs``)
  and reads its ``feature_tap`` (default the "emb" tap), standardised on the real training set. The paper's
  extractor is a ResNet34 trained for 350 epochs; the teacher's architecture is our stand-in, as it is sized for
  the data. ``feature_net: teacher`` is the former form: the frozen teacher's own embedding, so the teacher
  that later filters and relabels also shapes the rejection step.
* For regression, conditions for generation are training targets drawn uniformly plus Gaussian jitter of
  ``label_jitter`` (in standardised target units), a small stand-in for CcGAN's vicinity; rejection sampling
  and the filter cutoff are global (the paper's regression filter is global with rho = 0.7).
* The ratio net's generated samples are drawn once, ``dre_pool`` per real training sample with its condition,
  and their teacher features cached (the paper draws a fresh generated batch every step; here that would cost
  a teacher pass per step, most of the pipeline's CPU time).
* Each optimisation step draws ``fake_fraction`` / (1 - fake_fraction) x batch_size synthetic samples beside
  the real batch, and the loss is the mean over that union (terms ``ce_real``/``ce_fake`` or
  ``mse_real``/``mse_fake`` are the two parts of the union mean). The paper samples from real U fake.
* The student is warm-started as in the paper (``--finetune --init_model_path``: its vanilla-trained
  checkpoint): ``warm_start: true`` (default) trains it on the real labels alone at the first step, with the recipe's
  ``train`` settings at a constant learning rate for ``warm_start_epochs`` (default ``train.epochs``), before the
  real + synthetic training starts. So the distilled student trains twice as many epochs as the student alone;
  the paper's comparison has the same asymmetry. ``warm_start: false`` starts from the initialisation (the
  former form).
* ``density_ratio: false`` (an ablation switch) skips step 2: every generated sample is accepted.
* A ``--smoke`` run cuts the pipeline to ``smoke_caps`` (applied by experiment/smoke.py).
* Nothing is written to disk: a resumed run retrains the GAN in ``setup``; everything in the pipeline is
  drawn from a private RNG seeded by the run seed, so the resumed run rebuilds the same synthetic set, and the
  global RNG stream the student's training uses is not consumed by it.
"""
from __future__ import annotations

import time
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgedistill.config import Recipe, TrainConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.regression import mse
from edgedistill.losses.response import ce
from edgedistill.methods.base import Method, Step
from edgedistill.methods.label_fit import fit_on_labels, fresh_copy
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.models.cgan import ConditionalGenerator, DensityRatioNet, ProjectionDiscriminator
from edgedistill.params import Params
from edgedistill.progress import StageProgress
from edgedistill.registry import METHODS


# -- the pure pieces (golden-tested against the spec's vectors) ---------------------------------------------
def dre_softplus_loss(r_real: torch.Tensor, r_fake: torch.Tensor, lam: float = 0.01) -> torch.Tensor:
    """Softplus-divergence density-ratio loss with the mean-one penalty on generated samples (step 2 in docs/methods/cgan_kd.md)."""
    return ((torch.sigmoid(r_fake) * r_fake).mean() - F.softplus(r_fake).mean() - torch.sigmoid(r_real).mean()
            + lam * (r_fake.mean() - 1.0) ** 2)


def acceptance_probs(ratios: torch.Tensor, m_bar: float) -> tuple[torch.Tensor, float]:
    """Rejection-sampling acceptance probabilities r / M for one chunk, M first raised to the chunk's max r;
    returns (probabilities in [0, 1], the updated M)."""
    m = max(float(m_bar), float(ratios.max())) if len(ratios) else float(m_bar)
    if m <= 0:
        return torch.ones_like(ratios), m  # every ratio is 0: nothing to prefer
    return (ratios / m).clamp(0.0, 1.0), m


def filter_cutoff(burn_in_losses: torch.Tensor, rho: float) -> float:
    """The rho-quantile of the burn-in samples' teacher losses (linear interpolation, as numpy's default)."""
    return float(torch.quantile(burn_in_losses.double(), rho))


def keep_mask(losses: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Samples kept by the filter: teacher loss strictly below the cutoff."""
    return losses < cutoff


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


# -- the method ----------------------------------------------------------------------------------------------
class CGANKDParams(Params):
    n_fake: int = Field(2000, ge=1, le=1_000_000, description="synthetic samples kept (split evenly over the classes)")
    fake_fraction: float = Field(0.5, ge=0.0, lt=1.0, description="share of synthetic samples in each training "
                                                                  "batch's union with the real batch")
    rho: float = Field(0.9, gt=0.0, le=1.0, description="filter: a sample is kept if the teacher's loss on it is "
                                                        "below the rho-quantile of the burn-in samples' losses")
    gan_steps: int = Field(2000, ge=1, le=1_000_000, description="conditional GAN training steps")
    gan_batch: int = Field(64, ge=1, le=100_000, description="conditional GAN batch size")
    gan_lr: float = Field(2e-4, gt=0.0, description="Adam learning rate of the generator and the discriminator")
    noise_dim: int = Field(32, ge=1, le=4096, description="noise dimension of the conditional generator")
    gan_width: int = Field(32, ge=1, le=4096, description="channels of the conditional generator and discriminator")
    dre_steps: int = Field(1000, ge=1, le=1_000_000, description="density-ratio net training steps")
    dre_batch: int = Field(128, ge=1, le=100_000, description="density-ratio net batch size")
    dre_pool: int = Field(20, ge=1, le=1000, description="generated samples per real training sample for the density-ratio "
                                                "net (drawn once, teacher features cached)")
    dre_lr: float = Field(1e-3, gt=0.0, description="Adam learning rate of the density-ratio net")
    dre_lambda: float = Field(0.01, ge=0.0, description="weight of the mean-one penalty of the density-ratio loss")
    burn_in: int = Field(500, ge=1, le=1_000_000, description="samples per class (or in all, for regression) that set the "
                                                "rejection bound M and the filter cutoff")
    feature_tap: str = Field("emb", description="teacher features phi of the density ratio: a name in the "
                                                "teacher's default_taps or a module path")
    label_jitter: float = Field(0.05, ge=0.0, description="regression: Gaussian jitter of the drawn training "
                                                          "targets (standardised units) used as conditions")
    density_ratio: bool = Field(True, description="false: skip the density-ratio rejection sampling (ablation): "
                                                  "every generated sample is accepted, only the filter drops")
    feature_net: Literal["separate", "teacher"] = Field(
        "separate", description="features phi of the density ratio: separate (a fresh copy of the teacher's "
                                "architecture trained on the labels, as the paper's separate network) or teacher "
                                "(the frozen teacher's own, the former form)")
    feature_epochs: Optional[int] = Field(None, ge=1, le=100_000, description="epochs of the separate feature "
                                          "network (default: the teacher's train.epochs)")
    warm_start: bool = Field(True, description="train the student on the real labels first (the paper's "
                                               "vanilla-trained checkpoint), then on real + synthetic samples")
    warm_start_epochs: Optional[int] = Field(None, ge=1, le=100_000, description="epochs of the warm start "
                                             "(default: train.epochs)")
    progress: bool = Field(True, description="show the pipeline's stages (defaults to engine.progress)")


@METHODS.register("cgan_kd")
class CGANKD(Method):
    """Student trains on real + cGAN samples, kept by density-ratio rejection and teacher loss, relabelled by it."""

    Params = CGANKDParams
    # Pipeline sizes in a --smoke run (seconds, not minutes): every stage still runs.
    smoke_caps = {"gan_steps": 100, "dre_steps": 20, "dre_pool": 4, "n_fake": 64, "burn_in": 64,
                  "feature_epochs": 2, "warm_start_epochs": 2}

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module | TeacherNet] = None,
                 **params: Any) -> None:
        super().__init__(student, info, **params)
        self.teachers = Teachers([teacher] if teacher is not None else [], info, self.method_name(), maximum=1,
                                 hint=" (it filters and relabels the synthetic samples)")
        self.teacher = self.teachers[-1].model
        self.classification = info.task == "classification"
        self.n_classes = info.n_outputs if self.classification else 0
        self.n_targets = 0 if self.classification else info.n_outputs
        tap = self.params.feature_tap
        self.feature_path = getattr(self.teacher, "default_taps", {}).get(tap, tap)
        from edgedistill.models import FeatureTaps

        try:
            FeatureTaps(self.teacher, {"phi": self.feature_path})  # a bad path fails now, before any training
        except UserInputError as exc:
            raise UserInputError(f"method.params.feature_tap: {exc}") from None
        # build_network seeded the global RNG with the run seed just before: the pipeline's private seed.
        self._seed = torch.initial_seed()
        self.fake_x: Optional[torch.Tensor] = None
        self.fake_y: Optional[torch.Tensor] = None
        self.stats: dict[str, Any] = {}
        self.feature_model: nn.Module = self.teacher  # type: ignore[assignment]  # replaced in setup if separate
        self._train_cfg = TrainConfig()  # the recipe's, from ``optimizers`` (called before ``setup``)
        self._train: Optional[TensorData] = None
        self._device = torch.device("cpu")
        if self.params.warm_start:
            self.own_backward = "trains the student on the labels alone at its first step (method.params.warm_start)"

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        self._train_cfg = cfg  # the warm start trains with the recipe's settings
        return super().optimizers(cfg)

    @classmethod
    def default_params(cls, recipe: Recipe) -> dict[str, Any]:
        return {"progress": recipe.engine.progress}

    # -- pipeline pieces ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _teacher_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One teacher pass: outputs and the flattened features phi(x) at ``feature_tap``."""
        from edgedistill.models import extract

        outs, phis = [], []
        for i in range(0, len(x), 256):
            out, feats = extract(self.teacher, x[i:i + 256], {"phi": self.feature_path})  # type: ignore[arg-type]
            if self.feature_model is not self.teacher:
                feats = extract(self.feature_model, x[i:i + 256], {"phi": self.feature_path})[1]
            outs.append(out)
            phis.append(feats["phi"].flatten(1))
        return torch.cat(outs), torch.cat(phis)

    def _fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, epochs: Optional[int],
             g: torch.Generator) -> nn.Module:
        """``model`` trained on the real labels (constant learning rate; ``epochs`` overrides ``cfg``'s)."""
        cfg = TrainConfig.model_validate({**cfg.model_dump(), "schedule": "constant",
                                          **({"epochs": epochs} if epochs is not None else {})})
        return fit_on_labels(model, x, y, cfg, self.classification, g)

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        return self._teacher_pass(x)[1]

    def _teacher_loss(self, out: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample teacher loss at condition ``c`` (CE or MAE) and the teacher's label (argmax / value)."""
        if self.classification:
            return F.cross_entropy(out, c.long(), reduction="none"), out.argmax(1)
        target = c.reshape(len(c), -1)
        return (out - target).abs().mean(1), out

    def _conditions(self, n: int, real_y: torch.Tensor, cls: int, g: torch.Generator) -> torch.Tensor:
        if self.classification:
            return torch.full((n,), cls, dtype=torch.long, device=real_y.device)
        idx = torch.randint(len(real_y), (n,), generator=g, device="cpu").to(real_y.device)
        y = real_y[idx].reshape(n, -1)
        return y + self.params.label_jitter * torch.randn(y.shape, generator=g, device="cpu").to(y.device)

    def _train_gan(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                   prog: StageProgress) -> ConditionalGenerator:
        shape, p = tuple(x.shape[1:]), self.params
        gen = ConditionalGenerator(shape, self.n_classes, self.n_targets, p.noise_dim, p.gan_width).to(x.device)
        disc = ProjectionDiscriminator(shape, self.n_classes, self.n_targets, p.gan_width).to(x.device)
        opt_g = torch.optim.Adam(gen.parameters(), lr=self.params.gan_lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=self.params.gan_lr, betas=(0.5, 0.999))
        b = min(self.params.gan_batch, len(x))
        prog.start("cgan_kd: conditional GAN", self.params.gan_steps)
        for step in range(self.params.gan_steps):
            idx = torch.randint(len(x), (b,), generator=g).to(x.device)
            xr, yr = x[idx], y[idx]
            z = torch.randn(b, self.params.noise_dim, generator=g).to(x.device)
            fake = gen(z, yr)
            loss_d = _hinge_d(disc(xr, yr), disc(fake.detach(), yr))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = -disc(fake, yr).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            prog.advance()
            if step % 100 == 0 or step == self.params.gan_steps - 1:
                prog.note(f"d {loss_d.item():.3f} g {loss_g.item():.3f}")
        prog.finish(f"{self.params.gan_steps} steps, last d loss {loss_d.item():.3f}, g loss {loss_g.item():.3f}")
        self.stats.update(gan_d_loss=round(loss_d.item(), 4), gan_g_loss=round(loss_g.item(), 4))
        return gen.eval()

    def _generate(self, gen: ConditionalGenerator, c: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            z = torch.randn(len(c), self.params.noise_dim, generator=g).to(c.device)
            return torch.cat([gen(z[i:i + 256], c[i:i + 256]) for i in range(0, len(c), 256)])

    def _train_dre(self, gen: ConditionalGenerator, phi_real: torch.Tensor, y: torch.Tensor,
                   norm: tuple[torch.Tensor, torch.Tensor], g: torch.Generator, prog: StageProgress) -> DensityRatioNet:
        # Generated samples for the ratio net are drawn once (``dre_pool`` per real sample, with the real
        # samples' conditions) and their teacher features cached: a fresh batch every step, as in the paper,
        # would cost a teacher pass per step, most of the pipeline's time on CPU.
        reps = self.params.dre_pool
        y_fake = y.repeat_interleave(reps, dim=0)
        phi_fake = (self._phi(self._generate(gen, y_fake, g)) - norm[0]) / norm[1]
        dre = DensityRatioNet(phi_real.shape[1], self.n_classes, self.n_targets).to(phi_real.device)
        opt = torch.optim.Adam(dre.parameters(), lr=self.params.dre_lr, betas=(0.5, 0.999), weight_decay=1e-4)
        b = min(self.params.dre_batch, len(phi_real))
        prog.start("cgan_kd: density ratio", self.params.dre_steps)
        for _ in range(self.params.dre_steps):
            idx = torch.randint(len(phi_real), (b,), generator=g).to(phi_real.device)
            # generated partners of the real batch: same conditions, one of each row's ``reps`` samples
            pick = idx * reps + torch.randint(reps, (b,), generator=g).to(phi_real.device)
            loss = dre_softplus_loss(dre(phi_real[idx], y[idx]), dre(phi_fake[pick], y_fake[pick]),
                                     self.params.dre_lambda)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            prog.advance()
        prog.finish(f"{self.params.dre_steps} steps, last loss {loss.item():.4f}")
        self.stats["dre_loss"] = round(loss.item(), 4)
        return dre.eval()

    def _sample_pool(self, gen: ConditionalGenerator, dre: Optional[DensityRatioNet], real_y: torch.Tensor,
                     norm: tuple[torch.Tensor, torch.Tensor], g: torch.Generator, prog: StageProgress
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """cDR-RS then filtering then relabelling, per class (or once, globally, for regression). Without a
        ratio net (``density_ratio: false``) every ratio is 1, so every sample is accepted."""
        groups = list(range(self.n_classes)) if self.classification else [0]
        quota = [self.params.n_fake // len(groups) + (i < self.params.n_fake % len(groups)) for i in range(len(groups))]
        xs, ys, drawn, accepted = [], [], 0, 0
        prog.start("cgan_kd: rejection sampling + filter", self.params.n_fake)
        for cls, want in zip(groups, quota):
            def chunk(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
                c = self._conditions(n, real_y, cls, g)
                x = self._generate(gen, c, g)
                out, phi = self._teacher_pass(x)
                with torch.no_grad():
                    r = dre((phi - norm[0]) / norm[1], c) if dre is not None else torch.ones(len(x), device=x.device)
                loss, label = self._teacher_loss(out, c)
                return x, c, r, loss, label

            _, _, r0, loss0, _ = chunk(self.params.burn_in)
            m_bar, cutoff = float(r0.max()), filter_cutoff(loss0, self.params.rho)
            got, tries = 0, 0
            # A generator far from the data could make acceptance rare: stop after 50x the quota drawn.
            while got < want and tries < 50 * want:
                x, c, r, loss, label = chunk(256)
                tries += 256
                probs, m_bar = acceptance_probs(r, m_bar)
                acc = torch.rand(len(r), generator=g).to(r.device) < probs
                keep = acc & keep_mask(loss, cutoff)
                accepted += int(acc.sum())
                idx = keep.nonzero().squeeze(1)[: want - got]
                xs.append(x[idx])
                ys.append(label[idx])
                got += len(idx)
                prog.advance(len(idx))
            drawn += tries
        fake_x, fake_y = torch.cat(xs), torch.cat(ys)
        if not self.classification:
            fake_y = fake_y.reshape(len(fake_y), *self._y_shape)
        self.stats.update(n_fake=len(fake_x), drawn=drawn, acceptance_rate=round(accepted / max(1, drawn), 4),
                          kept_rate=round(len(fake_x) / max(1, drawn), 4))
        prog.finish(f"{len(fake_x)} kept of {drawn} drawn (density-ratio acceptance {accepted / max(1, drawn):.2f})")
        return fake_x, fake_y

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)
        self._train, self._device = train, device  # for the warm start at the first step
        if self.fake_x is not None:
            return
        start = time.perf_counter()
        x, y = train.x.to(device), train.y.to(device)
        self._y_shape = tuple(train.y.shape[1:])
        # A private RNG stream: the pipeline is the same on resume and leaves the student's stream untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            g = torch.Generator().manual_seed(self._seed)
            with StageProgress(enabled=self.params.progress) as prog:
                t0 = time.perf_counter()
                if self.params.feature_net == "separate":
                    net = fresh_copy(self.teacher).to(device)  # type: ignore[arg-type]
                    self.feature_model = self._fit(net, x, y, self.teachers[-1].config.train,
                                                   self.params.feature_epochs, g).requires_grad_(False)
                self.stats["feature_net_seconds"] = round(time.perf_counter() - t0, 1)
                gen = self._train_gan(x, y, g, prog)
                phi_real = self._phi(x)
                norm = (phi_real.mean(0), phi_real.std(0).clamp_min(1e-6))
                dre = self._train_dre(gen, (phi_real - norm[0]) / norm[1], y, norm, g, prog) \
                    if self.params.density_ratio else None
                self.fake_x, self.fake_y = self._sample_pool(gen, dre, y, norm, g, prog)
        if len(self.fake_x) == 0 and self.params.fake_fraction > 0:
            raise UserInputError("method.params: cgan_kd kept no synthetic sample (the filter or the density "
                                 "ratio rejected all); raise rho or gan_steps")
        self.stats["seconds"] = round(time.perf_counter() - start, 1)

    def warm_start_student(self, train: TensorData) -> None:
        """Train the student on the real labels alone (the paper's vanilla-trained checkpoint), from a private RNG
        seeded by the run seed. Run at the first step, not in ``setup``: the engine restores a resumed run's
        weights before ``setup``, and a run resumed after epoch 1 must keep them; one resumed from its start
        redoes the same warm start."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed + 1)
            g = torch.Generator().manual_seed(self._seed + 1)
            t0 = time.perf_counter()
            x, y = train.x.to(self._device), train.y.to(self._device)
            self._fit(self.networks["student"], x, y, self._train_cfg, self.params.warm_start_epochs, g).train()
        self.stats["warm_start_seconds"] = round(time.perf_counter() - t0, 1)

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        if step.step == 0 and self.params.warm_start and self._train is not None:
            self.warm_start_student(self._train)
        xr, yr = batch["x"], batch["y"]
        n_r = len(xr)
        frac = self.params.fake_fraction
        n_f = round(n_r * frac / (1.0 - frac)) if self.fake_x is not None else 0
        name = "ce" if self.classification else "mse"
        loss = ce if self.classification else mse
        if n_f == 0 or self.fake_x is None or len(self.fake_x) == 0:
            return {f"{name}_real": loss(self.networks["student"](xr), yr)}
        idx = torch.randint(len(self.fake_x), (n_f,)).to(self.fake_x.device)
        out = self.networks["student"](torch.cat([xr, self.fake_x[idx].to(xr.dtype)]))
        share = n_r / (n_r + n_f)  # the two terms add up to the mean loss over the real + synthetic union
        yf = self.fake_y[idx]  # type: ignore[index]
        return {f"{name}_real": share * loss(out[:n_r], yr), f"{name}_fake": (1.0 - share) * loss(out[n_r:], yf)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "feature_path": self.feature_path, "feature_net": self.params.feature_net,
                "warm_start": self.params.warm_start,
                **{f"pipeline_{k}": v for k, v in self.stats.items()}}

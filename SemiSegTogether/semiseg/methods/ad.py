"""A&D — Aggregating & Decoupling (Wang & Li, NeurIPS 2023), "Towards Generic Semi-Supervised Framework for
Volumetric Medical Image Segmentation" (arXiv 2310.11320), re-implemented from the authors' released code,
github.com/xmed-lab/GenericSSL at commit 4158615: the training step of `code/train_diffusion.py:124-285`
(https://github.com/xmed-lab/GenericSSL/blob/41586150e2d821c09018388b2a565c21ef8ced49/code/train_diffusion.py#L124-L285), the network of `code/DiffVNet/diff_vnet.py:499-556`.

Per iteration (B labeled, B unlabeled):

1. Aggregation (`before_optimizer_step`): θ ← w·θ + (1 − w)·(ξ + ψ)/2 over D_θ's parameters that D_ξ has
   with the same shape (all 54 of them); BatchNorm running statistics are not averaged. w = 0.99.
2. Labeled: x0 = 2·onehot(y) − 1, t ~ U{0..999}, x_t = q(x_t | x0);
   L_deno = DiceCE(D_ξ(x_t, t, image), y);
   class weights w_c from the difficulty of D_ξ's prediction (learning / unlearning EMAs, momentum 0.98);
   L_diff = DiceCE_w(D_ψ(image), y).
3. Pseudo-label (no gradient, train mode as released): DDIM (10 steps, η = 0) gives x0 for the unlabeled image;
   ŷ = argmax(GaussSmooth₃,σ=1(gumbel_softmax(x0, τ=1)) + softmax(D_ψ(image_u))).
4. L_u = DiceCE(D_θ(image_u), ŷ), unweighted.
5. L = L_deno + L_diff + μ(step)·L_u, μ = mu·exp(−5(1 − step/R)²).

Inference runs image stem → encoder → D_θ (`DiffVNetInference`, registered as "diffvnet-infer").

The same method serves the paper's four settings; which one a run is in is named from the data by `ad_setting`
(the domains of the labeled / unlabeled / test cases and the class sizes) and only changes the reference's
per-setting configuration (`SETTING_CONFIG`, from GenericSSL `code/utils/config.py:1-55`), not the algorithm — that is the paper's claim.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from semiseg import distributed
from semiseg.errors import ConfigError
from semiseg.losses import one_hot
from semiseg.methods.ad_diffusion import LabelDiffusion
from semiseg.methods.base import LabelsAsLogits, Method, sigmoid_rampup
from semiseg.nets import build_network
from semiseg.nets.diffvnet import DiffVNet, DiffVNetInference, Stage

SETTINGS = ("ssl", "imbalanced", "uda", "ssdg")

# The reference's per-task configuration (GenericSSL code/utils/config.py:1-55 and train.sh at 4158615), one task
# per setting. patch_size is in the engine's (z, y, x) order. `rampup` (fraction of training over which μ ramps)
# is what the method itself takes from here; the rest is advice for the loop and the data sampler.
SETTING_CONFIG: dict[str, dict] = {
    "ssl": {"reference_task": "LA (left atrium, MR), 5 % / 10 % labeled", "n_classes": 2,
            "patch_size": (80, 112, 112), "batch_size": 4, "early_stop_patience_epochs": 50, "rampup": 1.0,
            "epoch_follows": "unlabeled", "reference_validation": "the labeled training cases"},
    "imbalanced": {"reference_task": "Synapse (BTCV, 13 organs, CT), 20 % labeled", "n_classes": 14,
                   "patch_size": (64, 128, 128), "batch_size": 2, "early_stop_patience_epochs": 100,
                   "rampup": 1.0, "epoch_follows": "unlabeled", "reference_validation": "4 held-out training cases"},
    "uda": {"reference_task": "MMWHS CT→MR / MR→CT (4 cardiac structures)", "n_classes": 5,
            "patch_size": (128, 128, 128), "batch_size": 2, "early_stop_patience_epochs": 100, "rampup": 1.0,
            "epoch_follows": "labeled", "reference_validation": "target-domain cases"},
    "ssdg": {"reference_task": "M&Ms leave-one-vendor-out, 2 % / 5 % labeled", "n_classes": 4,
             "patch_size": (32, 128, 128), "batch_size": 4, "early_stop_patience_epochs": 80,
             "rampup": 100 / 300, "epoch_follows": "unlabeled", "reference_validation": "the test split"},
}


def _is_imbalanced(n_classes: int, class_fractions: Sequence[float] | None, ratio: float) -> bool:
    if n_classes <= 2:
        return False
    if class_fractions is None:
        # No sizes given: a multi-class task is treated as the class-imbalanced setting, as in the paper (its
        # multi-class SSL benchmark is Synapse). The algorithm is the same either way.
        return True
    fr = [float(f) for f in class_fractions]
    if len(fr) == n_classes:
        fr = fr[1:]  # background listed first
    elif len(fr) != n_classes - 1:
        raise ConfigError(f"class_fractions has {len(fr)} entries; expected {n_classes} (with background) "
                          f"or {n_classes - 1} (foreground only)")
    if min(fr) <= 0:
        return True
    return max(fr) / min(fr) >= ratio


def ad_setting(n_classes: int, labeled_domains: Iterable[Hashable], unlabeled_domains: Iterable[Hashable],
               test_domains: Iterable[Hashable], class_fractions: Sequence[float] | None = None,
               imbalance_ratio: float = 10.0) -> str:
    """Name the A&D setting from the data.

    - "ssdg": some test domain is seen by no training case (neither labeled nor unlabeled) — semi-supervised
      domain generalisation (M&Ms: few labels on vendors A–C, test on D);
    - "uda": the unlabeled cases come from domain(s) with no labeled case, and the test cases come from those
      domains (or no test domains are given) — unsupervised domain adaptation (MMWHS CT→MR);
    - "imbalanced": one domain picture, ≥ 2 foreground classes whose voxel fractions differ by at least
      `imbalance_ratio` (largest / smallest foreground class), or multi-class with no fractions given;
    - "ssl": everything else (LA).

    Domains are any hashable ids (names or integers). `class_fractions`: per-class voxel fractions of the
    labeled cases, background first (n_classes entries) or foreground only (n_classes − 1 entries).
    """
    lab, unl, test = set(labeled_domains), set(unlabeled_domains), set(test_domains)
    if test and test - (lab | unl):
        return "ssdg"
    target = unl - lab
    if target and (not test or test & target):
        return "uda"
    return "imbalanced" if _is_imbalanced(n_classes, class_fractions, imbalance_ratio) else "ssl"


def dice_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The released `DC_and_CE_loss`: CE (class-weighted when `weights`) + soft batch Dice (sums over batch and
    space, background excluded, smooth 1, Dice of class c multiplied by w_c). The released code returns
    CE − mean_c(w_c·Dice_c); we return CE + 1 − mean_c(w_c·Dice_c): the same gradients, positive when unweighted."""
    logits = logits.float()
    n_classes = logits.shape[1]
    target = target.long()
    ce = F.cross_entropy(logits, target, weight=weights)
    probs = logits.softmax(1)
    onehot = one_hot(target, n_classes)
    dims = (0, *range(2, logits.ndim))
    tp = (probs * onehot).sum(dims)
    fp = (probs * (1 - onehot)).sum(dims)
    fn = ((1 - probs) * onehot).sum(dims)
    dice = (2 * tp + 1.0) / (2 * tp + fp + fn + 1.0 + 1e-8)
    if n_classes > 1:
        dice = dice[1:]
        if weights is not None:
            dice = dice * weights[1:]
    elif weights is not None:
        dice = dice * weights
    return ce + 1.0 - dice.mean()


class DifficultyWeights(nn.Module):
    """Difficulty-aware class weights (released `Difficulty`, train_diffusion.py:128-166; DHC, MICCAI 2023).

    With d_c the hard batch Dice of class c (background included, smooth 1e-8) between argmax(prediction)
    and the label, and d'_c the previous iteration's (initially 1e-8):
        Δ_c = d_c − d'_c,  learn_c = [Δ_c > 0]·Δ_c·ln(d_c/d'_c),  unlearn_c = [Δ_c ≤ 0]·Δ_c·ln(d_c/d'_c)
        L_c ← m·L_c + (1−m)·learn_c,  U_c ← m·U_c + (1−m)·unlearn_c,  D_c ← m·D_c + (1−m)·(1 − d_c)
        w_c = C · ((U_c + 1e-8)/(L_c + 1e-8))^(1/5) · D_c,       m = (N − 1)/N, N = 50 → 0.98,
    L_c, U_c start at 0 and D_c at 1. All state is in buffers (checkpointed)."""

    def __init__(self, n_classes: int, accumulate_iters: int = 50):
        super().__init__()
        self.n_classes = n_classes
        self.momentum = (accumulate_iters - 1) / accumulate_iters
        self.register_buffer("last_dice", torch.full((n_classes,), 1e-8))
        self.register_buffer("learn", torch.zeros(n_classes))
        self.register_buffer("unlearn", torch.zeros(n_classes))
        self.register_buffer("difficulty", torch.ones(n_classes))
        self.register_buffer("weights", torch.full((n_classes,), float(n_classes)))

    @staticmethod
    def hard_dice(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
        pred = one_hot(logits.argmax(1), n_classes)
        gt = one_hot(target, n_classes)
        dims = (0, *range(2, pred.ndim))
        # Counts over the global batch under DDP (summed over ranks), so every rank's weights are the same.
        tp, fp, fn = distributed.all_reduce_sum(torch.stack([(pred * gt).sum(dims), (pred * (1 - gt)).sum(dims),
                                                             ((1 - pred) * gt).sum(dims)]))
        return (2 * tp + 1e-8) / (2 * tp + fp + fn + 1e-8 + 1e-8)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = self.hard_dice(logits.float(), target, self.n_classes)
        delta = dice - self.last_dice
        log_ratio = torch.log(dice / self.last_dice)
        zero = torch.zeros_like(delta)
        learn = torch.where(delta > 0, delta, zero) * log_ratio
        unlearn = torch.where(delta <= 0, delta, zero) * log_ratio
        m = self.momentum
        self.last_dice.copy_(dice)
        self.learn.mul_(m).add_((1 - m) * learn)
        self.unlearn.mul_(m).add_((1 - m) * unlearn)
        self.difficulty.mul_(m).add_((1 - m) * (1 - dice))
        ratio = ((self.unlearn + 1e-8) / (self.learn + 1e-8)).pow(0.2)
        self.weights.copy_(ratio * self.difficulty * self.n_classes)
        return self.weights.clone()


def gaussian_kernel3d(channels: int, size: int = 3, sigma: float = 1.0) -> torch.Tensor:
    """Normalised separable Gaussian as a depthwise conv3d weight (channels, 1, k, k, k)."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    k = g[:, None, None] * g[None, :, None] * g[None, None, :]
    k = k / k.sum()
    return k.expand(channels, 1, size, size, size).contiguous()


class AggregatingDecoupling(Method):
    name = "ad"
    description = ("A&D (DiffVNet): diffusion decoder + labeled decoder decoupled from the unlabeled decoder, "
                   "whose weights aggregate the other two; DDIM + D_ψ pseudo-labels; for SSL, class-imbalanced "
                   "SSL, UDA and semi-supervised DG alike.")
    defaults = {
        "n_filters": 32, "norm": "batch", "dropout": True, "stage_dropout": 0.1, "reference_layout": True,
        "setting": "auto", "labeled_domains": [], "unlabeled_domains": [], "test_domains": [],
        "class_fractions": None, "imbalance_ratio": 10.0,
        "mu": 10.0, "rampup": None, "ema_w": 0.99, "difficulty_iters": 50,
        "timesteps": 1000, "sample_steps": 10, "eta": 0.0,
        "xi_probs": "gumbel", "gumbel_tau": 1.0, "smooth_kernel": 3, "smooth_sigma": 1.0,
        "encoder_bn_stats": "all",
    }
    option_help = {
        "n_filters": "DiffVNet width (reference: 32 → 57.9 M parameters)",
        "norm": "batch (reference) | instance | group",
        "dropout": "Dropout3d(0.5) on the bottleneck and the last decoder feature in training (reference: on)",
        "stage_dropout": "Dropout3d rate after every convolution in training (reference 0.1; 0 with dropout=false "
                         "trains without dropout, like the supervised baseline)",
        "reference_layout": "keep the modules the released model builds but never uses (exact parameter count and "
                            "checkpoint compatibility); false drops them (for DDP without find_unused_parameters)",
        "setting": "auto | ssl | imbalanced | uda | ssdg; auto names it from the domain / class-size options",
        "labeled_domains": "domain ids or names of the labeled cases (dataset.json 'domain')",
        "unlabeled_domains": "domain ids or names of the unlabeled cases",
        "test_domains": "domain ids or names the model will be tested on (unseen ones → ssdg)",
        "class_fractions": "voxel fraction per class in the labeled cases (background first), for auto",
        "imbalance_ratio": "largest / smallest foreground fraction from which auto says 'imbalanced'",
        "mu": "maximum weight of the unlabeled loss (README command: -w 10)",
        "rampup": "μ ramp length as a fraction of the iterations; null: the setting's (1.0; ssdg 1/3)",
        "ema_w": "aggregation momentum: θ ← w·θ + (1−w)·(ξ+ψ)/2 (reference 0.99)",
        "difficulty_iters": "N of the class-difficulty EMAs, momentum (N−1)/N (reference 50 → 0.98)",
        "timesteps": "diffusion steps T (reference 1000)",
        "sample_steps": "DDIM steps for the pseudo-labels (reference 10)",
        "eta": "DDIM η (reference 0: deterministic given x_T)",
        "xi_probs": "gumbel (released: gumbel_softmax of the DDIM x0) | softmax (the same without Gumbel noise)",
        "gumbel_tau": "temperature of the Gumbel-softmax / softmax of the DDIM x0 (reference 1)",
        "smooth_kernel": "Gaussian smoothing of the diffusion probabilities: kernel size (reference 3; 1 = off)",
        "smooth_sigma": "Gaussian smoothing sigma (reference 1)",
        "encoder_bn_stats": "all (reference: every pass updates the shared encoder's BatchNorm running statistics, "
                            "11 of 14 per iteration through the diffusion path) | image (only the image-path passes "
                            "do, the input the test-time path sees)",
    }
    preferred_optimizer = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 3e-5}
    # Several forward passes per step (D_xi, D_psi, DDIM, D_theta) with gradients through different decoders, and
    # (reference_layout) modules that never get a gradient: find_unused_parameters would search only the last
    # pass's graph and fail; the used set is the same every iteration, which static_graph handles.
    ddp_static_graph = True

    def __init__(self, context):
        super().__init__(context)
        o = self.opts
        if o["xi_probs"] not in ("gumbel", "softmax"):
            raise ConfigError(f"method 'ad': xi_probs must be 'gumbel' or 'softmax', not {o['xi_probs']!r}")
        if o["encoder_bn_stats"] not in ("all", "image"):
            raise ConfigError(f"method 'ad': encoder_bn_stats must be 'all' or 'image', not {o['encoder_bn_stats']!r}")
        if not 0.0 <= float(o["stage_dropout"]) < 1.0:
            raise ConfigError(f"method 'ad': stage_dropout must be in [0, 1), got {o['stage_dropout']}")
        if o["setting"] not in ("auto", *SETTINGS):
            raise ConfigError(f"method 'ad': setting must be one of auto, {', '.join(SETTINGS)}; "
                              f"got {o['setting']!r}")
        if context.n_classes < 2:
            raise ConfigError("method 'ad' needs at least 2 classes (background included)")
        self.setting = self._resolve_setting()
        self.setting_config = dict(SETTING_CONFIG[self.setting])
        self.rampup = float(o["rampup"]) if o["rampup"] is not None else float(self.setting_config["rampup"])
        self.net = DiffVNet(context.in_channels, context.n_classes, int(o["n_filters"]), o["norm"],
                            has_dropout=bool(o["dropout"]), reference_layout=bool(o["reference_layout"]))
        self.net.semiseg_arch = {"name": "diffvnet", "args": self._arch_args(has_dropout=bool(o["dropout"]))}
        for stage in self.net.modules():  # the per-convolution Dropout3d of every stage (eval mode: off anyway)
            if isinstance(stage, Stage):
                stage.dropout.p = float(o["stage_dropout"])
        self.diffusion = LabelDiffusion(int(o["timesteps"]), int(o["sample_steps"]), float(o["eta"]))
        self.difficulty = DifficultyWeights(context.n_classes, int(o["difficulty_iters"]))
        self.register_buffer("smoothing_kernel",
                             gaussian_kernel3d(context.n_classes, int(o["smooth_kernel"]), float(o["smooth_sigma"])),
                             persistent=False)
        # Which domain ids the labeled (row 0) and unlabeled (row 1) batches have carried: a record for the run
        # report and for checking the declared setting against the data actually seen.
        self.register_buffer("seen_domains", torch.zeros(2, max(1, context.n_domains), dtype=torch.bool))
        self._warned_domains = False

    # ---------------------------------------------------------------- configuration
    def _arch_args(self, **extra) -> dict:
        c, o = self.context, self.opts
        return {"in_channels": c.in_channels, "n_classes": c.n_classes, "n_filters": int(o["n_filters"]),
                "norm": o["norm"], "reference_layout": bool(o["reference_layout"]), **extra}

    def _resolve_setting(self) -> str:
        o = self.opts
        if o["setting"] != "auto":
            return o["setting"]
        data = self.context.domains
        return ad_setting(self.context.n_classes, o["labeled_domains"] or data.get("labeled", []),
                          o["unlabeled_domains"] or data.get("unlabeled", []),
                          o["test_domains"] or data.get("test", []),
                          o["class_fractions"] or self.context.class_fractions, float(o["imbalance_ratio"]))

    def mu(self, step: int) -> float:
        length = int(round(self.rampup * self.context.total_iterations))
        return float(self.opts["mu"]) * sigmoid_rampup(step, length)

    # ---------------------------------------------------------------- the pieces
    @torch.no_grad()
    def aggregate(self) -> int:
        """θ ← w·θ + (1 − w)·(ξ + ψ)/2 on D_θ's parameters that D_ξ has with the same name and shape.
        Returns how many parameter tensors were aggregated."""
        w = float(self.opts["ema_w"])
        xi = dict(self.net.decoder_xi.named_parameters())
        psi = dict(self.net.decoder_psi.named_parameters())
        n = 0
        for name, theta in self.net.decoder_theta.named_parameters():
            if name in xi and xi[name].shape == theta.shape:
                theta.mul_(w).add_(xi[name] + psi[name], alpha=(1.0 - w) / 2.0)
                n += 1
        return n

    @contextmanager
    def diffusion_pass(self):
        """Around every diffusion-path pass: with encoder_bn_stats=image the shared encoder's BatchNorm layers
        normalise with the batch's statistics but leave their running statistics (what D_θ uses at test time)
        to the image-path passes (momentum 0 keeps them as they are)."""
        if self.opts["encoder_bn_stats"] != "image":
            yield
            return
        norms = [m for m in self.net.encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0
        try:
            yield
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum

    def diffusion_x0(self, image_u: torch.Tensor, noise: torch.Tensor | None = None,
                     visited: list[int] | None = None) -> torch.Tensor:
        net = self.step_net
        shape = (image_u.shape[0], self.context.n_classes, *image_u.shape[2:])
        with self.diffusion_pass():
            return self.diffusion.ddim_sample(lambda x_t, t: net(image_u, x_t, t, mode="xi"), shape,
                                              image_u.device, noise=noise, visited=visited)

    @torch.no_grad()
    def pseudo_label(self, image_u: torch.Tensor) -> torch.Tensor:
        """argmax(smooth(gumbel_softmax(DDIM x0)) + softmax(D_ψ)) → (B, d, h, w) long."""
        x0 = self.diffusion_x0(image_u)
        tau = float(self.opts["gumbel_tau"])
        if self.opts["xi_probs"] == "gumbel":
            p_xi = F.gumbel_softmax(x0, tau=tau, hard=False, dim=1)
        else:
            p_xi = (x0 / tau).softmax(1)
        k = self.smoothing_kernel
        if k.shape[-1] > 1:
            p_xi = F.conv3d(p_xi, k.to(p_xi.dtype), groups=p_xi.shape[1], padding="same")
        p_psi = self.step_net(image_u, mode="psi").float().softmax(1)
        return (p_xi + p_psi).argmax(1)

    def unlabeled_loss(self, image_u: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
        return dice_ce(self.step_net(image_u, mode="theta"), pseudo)

    def _record_domains(self, row: int, batch: dict) -> None:
        dom = batch.get("domain")
        if dom is None:
            return
        dom = torch.as_tensor(dom).reshape(-1).long()
        n = self.seen_domains.shape[1]
        if (dom >= n).any() or (dom < 0).any():
            if not self._warned_domains:
                warnings.warn(f"method 'ad': domain ids {dom.tolist()} outside 0..{n - 1} (n_domains) not recorded")
                self._warned_domains = True
            dom = dom[(dom >= 0) & (dom < n)]
        self.seen_domains[row, dom.to(self.seen_domains.device)] = True

    def observed_domains(self) -> tuple[list[int], list[int]]:
        """Domain ids the labeled and the unlabeled batches have carried so far."""
        return ([int(i) for i in self.seen_domains[0].nonzero().flatten()],
                [int(i) for i in self.seen_domains[1].nonzero().flatten()])

    # ---------------------------------------------------------------- the loop's hooks
    def before_optimizer_step(self, step: int) -> None:
        self.aggregate()

    def training_step(self, labeled, unlabeled, step):
        unlabeled = self.unlabeled_batch(unlabeled)
        if unlabeled is None and not self.is_twin:
            raise ConfigError("method 'ad' needs an unlabeled batch every iteration")
        net = self.step_net
        n = self.context.n_classes
        image_l, label_l = labeled["image"], labeled["label"].long()
        self._record_domains(0, labeled)
        if unlabeled is not None:
            self._record_domains(1, unlabeled)
        self.seen_domains.copy_(distributed.all_reduce_max(self.seen_domains))  # every rank's batches

        # Labeled: denoising on D_ξ, difficulty-weighted supervision on D_ψ.
        x0 = one_hot(label_l, n) * 2 - 1
        t = self.diffusion.sample_t(image_l.shape[0], image_l.device)
        x_t = self.diffusion.q_sample(x0, t)
        with self.diffusion_pass():
            p_l_xi = net(image_l, x_t, t, mode="xi")
        p_l_psi = net(image_l, mode="psi")
        loss_deno = dice_ce(p_l_xi, label_l)
        weights = self.difficulty.update(p_l_xi.detach(), label_l)
        loss_diff = dice_ce(p_l_psi, label_l, weights)

        out = {"denoise": loss_deno.detach(), "labeled": loss_diff.detach()}
        if unlabeled is None:
            # The supervised twin (μ = 0, no pseudo-labels): D_θ learns only through the aggregation, as in the
            # method; one pass without gradient on the labeled image gives its BatchNorm the running statistics
            # that the method's unlabeled pass would.
            with torch.no_grad():
                net(image_l, mode="theta")
            out["total"] = loss_deno + loss_diff
        else:
            # Unlabeled: pseudo-labels from the diffusion and labeled heads teach D_θ.
            image_u = unlabeled["image"]
            pseudo = self.pseudo_label(image_u)
            loss_u = self.unlabeled_loss(image_u, pseudo)
            mu = self.mu(step)
            out.update(total=loss_deno + loss_diff + mu * loss_u, unlabeled=loss_u.detach(), mu=torch.tensor(mu))
        if n <= 8:
            out.update({f"class_weight_{c}": weights[c].detach() for c in range(n)})
        return out

    parent_init = ("image stem, shared encoder and D_θ from the package; D_ψ and D_ξ copies of D_θ (D_ξ's timestep "
                   "fusions fresh); the diffusion stem's image channel from the image stem (x_t channels fresh)")

    def spread_parent_weights(self) -> None:
        from semiseg.finetune import copy_matching
        net = self.net
        net.decoder_psi.load_state_dict(net.decoder_theta.state_dict())
        copy_matching(net.decoder_xi, net.decoder_theta)
        copy_matching(net.denoise_model.embedding_diffusion.emb, net.embedding.emb)

    def pseudo_label_network(self) -> nn.Module:
        """`pseudo_label`: DDIM-sampled D_ξ labels (smoothed) plus D_ψ's softmax, what teaches D_θ."""
        return LabelsAsLogits(self, self.pseudo_label, self.context.n_classes)

    def inference_network(self) -> nn.Module:
        net = self.__dict__.get("_inference")
        if net is None:
            net = build_network("diffvnet-infer", **self._arch_args())
            DiffVNetInference.sharing(self.net, net)
            object.__setattr__(self, "_inference", net)  # not a submodule: its tensors are self.net's
        return net


__all__ = ["AggregatingDecoupling", "ad_setting", "dice_ce", "DifficultyWeights", "SETTINGS", "SETTING_CONFIG",
           "gaussian_kernel3d"]

"""VerSemi — "Segment Together" (Zeng et al., 2023): one task-prompted model over several datasets.

Each labeled case carries its task (the structure set its dataset annotates). A V-Net body with a
DoDNet-style dynamic head (`semiseg.nets.dynamic_vnet`) is prompted with a one-hot task; one extra
prompt, the synthetic CutMix task, segments the union of all foregrounds.

Stage 1 (labeled, every iteration):
    L_sup  = Dice + CE of the prompted prediction against the case's own structures;
    L_syn  = Dice of the synthetic task on a CutMix of two labeled cases (a outside the cube,
             b inside) against the union of both foregrounds;
    L_spec = task-specific Dice on the same mix: a's task against a's labels outside the cube,
             b's task against b's labels inside it (the mixed label when both share a task);
             `specific_region` says where each task's prediction is scored (see its help).
    L = L_sup + L_syn + L_spec
Stage 2 (after `stage1_fraction` of the iterations), the paper's unlabeled consistency:
    L_sup as above; L_syn_sup = L_syn with a random box ratio in `mask_ratio_range`;
    CutMix x = u·M + l·(1−M) (labeled cube in an unlabeled surround);
    P_syn = synthetic-task foreground, P_agg = clip(max_k foreground of task k, 0, 1);
    L_agg  = Dice(P_syn, P_agg);  L_cube = Dice(P_syn·(1−M), y_l·(1−M)) with M label-shaped.
    L = L_sup + L_agg + L_cube + L_syn_sup
See docs/methods/versemi.md for the mapping to the released code and every departure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semiseg.errors import ConfigError
from semiseg.methods.base import Method
from semiseg.methods.cutmix import cutmix_box
from semiseg.nets import build_network

DICE_EPS = 1e-5
SPECIFIC_REGIONS = ("image", "own", "off")


def dice_loss(score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference's soft Dice over the whole batch: 1 − (2Σst + ε) / (Σs² + Σt² + ε)."""
    score, target = score.float(), target.float()
    inter = (score * target).sum()
    return 1 - (2 * inter + DICE_EPS) / ((score * score).sum() + (target * target).sum() + DICE_EPS)


def task_dice_loss(probs: torch.Tensor, local: torch.Tensor, n_channels: torch.Tensor) -> torch.Tensor:
    """Dice per structure channel over the batch, averaged over the channels some sample's prompt has.

    probs (B, C, ...) softmax of padded logits; local (B, ...) task-local labels (0 = background);
    n_channels (B,) channels of each sample's prompt. With one structure per task this is exactly
    the reference's Dice on channel 1.
    """
    losses = []
    for c in range(1, probs.shape[1]):
        if bool((n_channels > c).any()):
            losses.append(dice_loss(probs[:, c], local == c))
    return torch.stack(losses).mean()


class VerSemi(Method):
    name = "versemi"
    description = ("Segment Together: one task-prompted V-Net (dynamic head) over several datasets; CutMix synthetic "
                   "union task; unlabeled consistency between the max over task heads and the synthetic task.")
    defaults = {
        "n_filters": 16, "head_channels": 8, "last_skip": False, "released_head": False,
        "stage1_fraction": 0.5, "mask_ratio": 2 / 3, "mask_ratio_range": [0.3, 0.6],
        "detach_aggregate": False, "cube_mask": "label", "task_balanced": False, "specific_region": "image",
    }
    option_help = {
        "n_filters": "V-Net width (reference 16)",
        "head_channels": "channels of the dynamic head (reference 8)",
        "last_skip": "add the last skip x8_up + x1 (the released code has it commented out: false)",
        "released_head": "also generate the released code's never-used second output layer (180 instead of 162 "
                         "generated parameters per sample with one structure per task)",
        "stage1_fraction": "fraction of the iterations in stage 1 (labeled + synthetic task); 1.0 = the released "
                           "__main__ (stage 1 only); the rest is stage 2 (unlabeled consistency)",
        "mask_ratio": "stage-1 CutMix cube side as a fraction of the patch (reference 2/3)",
        "mask_ratio_range": "stage-2 cube side fraction, drawn uniformly per iteration (reference [0.3, 0.6])",
        "detach_aggregate": "stop gradients through the aggregated task prediction (reference: false)",
        "cube_mask": "label (correct (B,D,H,W) mask for the labeled-cube term) | released (the released "
                     "code's (B,1,D,H,W)·(B,D,H,W) broadcast to (B,B,D,H,W))",
        "task_balanced": "sample labeled cases so that every task is equally frequent (read by the sampler; the "
                         "reference samples at random)",
        "specific_region": "where L_spec scores each task's prediction on a mix of two tasks' cases: image (the "
                           "reference: the whole mix, the other case's region as background) | own (only the region "
                           "whose labels belong to that task: for data where every task's structures appear in "
                           "every image, unlabeled) | off (no L_spec). One task: all three but off are the same",
    }
    # Adam lr 1e-3, betas (0.5, 0.999), no weight decay, constant learning rate (train.py of the reference).
    preferred_optimizer = {"optimizer": "adam", "lr": 1e-3, "betas": [0.5, 0.999], "weight_decay": 0.0,
                           "schedule": "constant"}

    def __init__(self, context):
        super().__init__(context)
        o = self.opts
        if not 0.0 <= float(o["stage1_fraction"]) <= 1.0:
            raise ConfigError(f"versemi: stage1_fraction must be in [0, 1], got {o['stage1_fraction']}")
        lo, hi = (float(v) for v in o["mask_ratio_range"])
        if not 0 < lo <= hi <= 1 or not 0 < float(o["mask_ratio"]) <= 1:
            raise ConfigError(f"versemi: mask ratios must lie in (0, 1], got mask_ratio={o['mask_ratio']}, "
                              f"mask_ratio_range={o['mask_ratio_range']}")
        if o["specific_region"] not in SPECIFIC_REGIONS:
            raise ConfigError(f"versemi: specific_region must be one of {', '.join(SPECIFIC_REGIONS)}, "
                              f"got {o['specific_region']!r}")
        if o["cube_mask"] not in ("label", "released"):
            raise ConfigError(f"versemi: cube_mask must be 'label' or 'released', got {o['cube_mask']!r}")
        task_classes = [list(map(int, c)) for c in context.task_classes] or [list(range(1, context.n_classes))]
        if len(task_classes) != max(1, context.n_tasks) and context.task_classes:
            raise ConfigError(f"versemi: {context.n_tasks} tasks but {len(task_classes)} task class lists")
        self.task_classes = task_classes
        self.net = build_network("vnet-dynamic", in_channels=context.in_channels, task_classes=task_classes,
                                 n_filters=o["n_filters"], head_channels=o["head_channels"],
                                 last_skip=bool(o["last_skip"]), released_head=bool(o["released_head"]))
        # global class value → index inside each task's channels (0 = background / not this task's).
        n_values = max(max(c) for c in task_classes) + 1
        lut = torch.zeros(len(task_classes), n_values, dtype=torch.long)
        for t, cls in enumerate(task_classes):
            for i, v in enumerate(cls):
                lut[t, v] = i + 1
        self.register_buffer("local_lut", lut, persistent=False)
        self.register_buffer("prompt_channels", torch.tensor(self.net.task_channels), persistent=False)
        self.stage2_start = int(round(float(o["stage1_fraction"]) * context.total_iterations))

    parent_init = ("V-Net body from the package; the dynamic head's controller remapped: a known task keeps its "
                   "prompt, a new task starts from the mean of the known ones, a new output channel from the "
                   "background's")

    def load_parent(self, parent) -> int:
        from semiseg.finetune import check_architecture
        from semiseg.methods.versemi_init import load_versemi_parent
        check_architecture(self.net, parent.manifest, parent.where)
        return load_versemi_parent(self.net, self.task_classes, parent)

    @classmethod
    def learns_from(cls, opts) -> bool:
        return float({**cls.defaults, **opts}["stage1_fraction"]) < 1.0

    @property
    def synthetic(self) -> int:
        return self.net.synthetic_task

    # -- helpers -----------------------------------------------------------------------------------
    def local_labels(self, label: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Global class values → each sample's task-local channel index (0 for anything not its task's)."""
        lab = label.long()
        lab = torch.where((lab >= 0) & (lab < self.local_lut.shape[1]), lab, torch.zeros_like(lab))
        return self.local_lut[task.long()].gather(1, lab.flatten(1)).view_as(lab)

    def prompt(self, image: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """One body pass, several prompts: tasks (B, T) → padded logits (B, T, C, ...) as float."""
        return self.step_net(image, tasks).float()

    def _tasks(self, batch: dict) -> torch.Tensor:
        img = batch["image"]
        task = batch.get("task")
        if task is None:
            return torch.zeros(img.shape[0], dtype=torch.long, device=img.device)
        task = task.long().to(img.device)
        if int(task.min()) < 0 or int(task.max()) >= self.net.n_tasks:
            raise ConfigError(f"versemi: labeled task index out of range 0..{self.net.n_tasks - 1}: {task.tolist()}")
        return task

    def supervised_loss(self, image, label, task):
        logits = self.prompt(image, task[:, None])[:, 0]
        local = self.local_labels(label, task)
        probs = logits.softmax(1)
        return task_dice_loss(probs, local, self.prompt_channels[task]) + F.cross_entropy(logits, local)

    def _pairs(self, n_total: int):
        # The reference splits its batch of 8 into halves a = [0:4], b = [4:8]; a batch of one mixes with itself.
        n = max(1, n_total // 2)
        a = torch.arange(n)
        b = a + n if n_total >= 2 else a
        return a, b

    def labeled_mix(self, image, label, task, ratio: float, with_specific: bool):
        """CutMix of labeled pairs: (L_syn, L_spec or None)."""
        a, b = self._pairs(image.shape[0])
        keep = cutmix_box((len(a), *image.shape[2:]), ratio, image.device)   # 1 = a (outside the cube)
        img_mix = image[a] * keep[:, None] + image[b] * (1 - keep[:, None])
        fg_a, fg_b = (label[a] > 0).float(), (label[b] > 0).float()
        union = fg_a * keep + fg_b * (1 - keep)
        ta, tb = task[a], task[b]
        syn = torch.full_like(ta, self.synthetic)
        region = self.opts["specific_region"]
        if not with_specific or region == "off":
            logits = self.prompt(img_mix, syn[:, None])
            l_syn = dice_loss(logits[:, 0].softmax(1)[:, 1], union)
            return l_syn, (None if not with_specific else torch.zeros_like(l_syn))
        logits = self.prompt(img_mix, torch.stack([syn, ta, tb], 1))
        l_syn = dice_loss(logits[:, 0].softmax(1)[:, 1], union)
        loc_a, loc_b = self.local_labels(label[a], ta), self.local_labels(label[b], tb)
        keep_l = keep.long()
        spec_a, spec_b = loc_a * keep_l, loc_b * (1 - keep_l)
        mixed = loc_a * keep_l + loc_b * (1 - keep_l)
        same = (ta == tb).view(-1, *[1] * (keep.ndim - 1))
        spec_a = torch.where(same, mixed, spec_a)
        spec_b = torch.where(same, mixed, spec_b)
        probs_a, probs_b = logits[:, 1].softmax(1), logits[:, 2].softmax(1)
        if region == "own":
            # The other case's region may hold this task's structures unlabeled: score only where the labels are
            # this task's (everywhere when both cases share the task).
            probs_a = probs_a * torch.where(same, torch.ones_like(keep), keep)[:, None]
            probs_b = probs_b * torch.where(same, torch.ones_like(keep), 1 - keep)[:, None]
        l_a = task_dice_loss(probs_a, spec_a, self.prompt_channels[ta])
        l_b = task_dice_loss(probs_b, spec_b, self.prompt_channels[tb])
        return l_syn, (l_a + l_b) / 2

    def aggregate(self, task_logits: torch.Tensor) -> torch.Tensor:
        """(B, K, C, ...) logits of the K real task heads → voxel-wise max over tasks of each task's foreground
        probability (1 − background; the reference's channel 1 when a task has one structure), clipped to [0, 1]."""
        fg = 1 - task_logits.softmax(2)[:, :, 0]
        return fg.max(1).values.clamp(0, 1)

    def unlabeled_terms(self, labeled, unlabeled):
        """Stage 2: (L_agg, L_cube, P_syn, P_agg, keep) on the unlabeled–labeled CutMix."""
        m = min(labeled["image"].shape[0], unlabeled["image"].shape[0])
        img_l, lab_l = labeled["image"][:m], labeled["label"][:m]
        img_u = unlabeled["image"][:m].to(img_l.dtype)
        lo, hi = (float(v) for v in self.opts["mask_ratio_range"])
        ratio = lo + (hi - lo) * float(torch.rand(()))
        keep = cutmix_box((m, *img_l.shape[2:]), ratio, img_l.device)     # 1 = unlabeled surround
        img_chaos = img_u * keep[:, None] + img_l * (1 - keep[:, None])
        K = self.net.n_tasks
        prompts = torch.arange(K + 1, device=img_l.device).expand(m, K + 1)   # all tasks, synthetic last
        logits = self.prompt(img_chaos, prompts)
        p_syn = logits[:, K].softmax(1)[:, 1]
        p_agg = self.aggregate(logits[:, :K])
        if self.opts["detach_aggregate"]:
            p_agg = p_agg.detach()
        l_agg = dice_loss(p_syn, p_agg)
        y = (lab_l > 0).float()
        if self.opts["cube_mask"] == "released":
            img_mask = keep[:, None]                          # (B,1,D,H,W) against (B,D,H,W) → (B,B,D,H,W)
            l_cube = dice_loss(p_syn * (1 - img_mask), y * (1 - img_mask))
        else:
            l_cube = dice_loss(p_syn * (1 - keep), y * (1 - keep))
        return l_agg, l_cube, p_syn, p_agg, keep

    # -- the step ----------------------------------------------------------------------------------
    def stage(self, step: int) -> int:
        """The recipe's stage at `step`; the supervised twin keeps the stages and drops stage 2's unlabeled terms."""
        return 2 if (self.learns_from_unlabeled and step >= self.stage2_start) else 1

    def training_step(self, labeled, unlabeled, step):
        image, label = labeled["image"], labeled["label"]
        task = self._tasks(labeled)
        l_sup = self.supervised_loss(image, label, task)
        unlabeled = self.unlabeled_batch(unlabeled)
        if self.stage(step) == 1:
            l_syn, l_spec = self.labeled_mix(image, label, task, float(self.opts["mask_ratio"]), True)
            total = l_sup + l_syn + l_spec
            return {"total": total, "supervised": l_sup.detach(), "synthetic": l_syn.detach(),
                    "specific": l_spec.detach(), "stage": torch.tensor(1.0)}
        lo, hi = (float(v) for v in self.opts["mask_ratio_range"])
        l_syn_sup, _ = self.labeled_mix(image, label, task, lo + (hi - lo) * float(torch.rand(())), False)
        if unlabeled is None:  # the supervised twin (or no unlabeled batch): stage 2's labeled terms alone
            return {"total": l_sup + l_syn_sup, "supervised": l_sup.detach(), "synthetic": l_syn_sup.detach(),
                    "stage": torch.tensor(2.0)}
        l_agg, l_cube, *_ = self.unlabeled_terms(labeled, unlabeled)
        total = l_sup + l_agg + l_cube + l_syn_sup
        return {"total": total, "supervised": l_sup.detach(), "synthetic": l_syn_sup.detach(),
                "aggregate_consistency": l_agg.detach(), "labeled_cube": l_cube.detach(),
                "stage": torch.tensor(2.0)}

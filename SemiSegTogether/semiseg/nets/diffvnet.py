"""DiffVNet: the network of A&D (Wang & Li, NeurIPS 2023, "Towards Generic Semi-Supervised Framework for
Volumetric Medical Image Segmentation", arXiv 2310.11320), re-implemented from the released code:
github.com/xmed-lab/GenericSSL at commit 4158615, `code/DiffVNet/diff_vnet.py:499-556` (`DiffVNet`; its blocks at
lines 34-498), https://github.com/xmed-lab/GenericSSL/blob/41586150e2d821c09018388b2a565c21ef8ced49/code/DiffVNet/diff_vnet.py#L499-L556.

One shared V-Net encoder, two stems and three decoders:

    image ─────────────── embedding (stem) ───────┐
                                                   ├─ encoder ─┬─ D_ψ (decoder_psi)   labeled head
    [image ‖ x_t], t ──── embedding_diffusion ─────┘  (temb)   ├─ D_θ (decoder_theta) unlabeled head, used at test
                          (stem + timestep MLP)                └─ D_ξ (denoise_model.decoder, temb) diffusion head

Every convolution stage is conv3³ → ReLU → BatchNorm → Dropout3d(0.1) (note: ReLU *before* the norm, unlike
the UA-MT V-Net). Down-/up-sampling are stride-2 (transposed) convolutions → ReLU → norm; skips are additive.
A sinusoidal timestep embedding (128 → 512 → swish → 512) is added, through a per-block
`Linear(512, C)(swish(temb))`, after every down/up block and after every conv stage but the last of each block.
With no timestep (`temb=None`) every fusion is the identity, so the encoder is shared by the conditioned
diffusion path and the plain image paths.

The module names mirror the released model so that a released checkpoint's state_dict loads as is, and
`reference_layout=True` also keeps the modules the released model builds but never uses (the timestep MLP of
the image stem, the fusion layer of the last stage of each block), so that the parameter count is the
published one: 57,891,910 parameters for 1 channel, 2 classes, n_filters 32 (the LA configuration).
With `reference_layout=False` those dead modules are left out (same function, fewer parameters; handy under
DistributedDataParallel, which then needs no `find_unused_parameters`).

`DiffVNetInference` is the test-time network: image stem → encoder → D_θ, with only those modules' weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from semiseg.nets import register_network
from semiseg.nets.vnet import make_norm

TEMB_IN = 128  # sinusoid width
TEMB_OUT = 512  # timestep MLP width


def timestep_embedding(t: torch.Tensor, dim: int = TEMB_IN) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) → (B, dim), as in DDPM: [sin(t·f_k), cos(t·f_k)],
    f_k = exp(−k·ln(10000)/(dim/2 − 1)). Raw integer t (no rescaling), as the released code."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class TembFusion(nn.Module):
    """x + Linear(512, C)(swish(temb)), broadcast over space; identity when temb is None."""

    def __init__(self, channels: int):
        super().__init__()
        self.temb_proj = nn.Linear(TEMB_OUT, channels)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        if temb is None:
            return x
        return x + self.temb_proj(swish(temb)).to(x.dtype)[:, :, None, None, None]


class Stage(nn.Module):
    """conv3³ → ReLU → norm → Dropout3d(0.1) [→ timestep fusion]."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, fuse: bool, keep_unused: bool):
        super().__init__()
        self.fuse = fuse
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm = make_norm(norm, out_ch)
        self.dropout = nn.Dropout3d(p=0.1)
        if fuse or keep_unused:
            self.temb_fusion = TembFusion(out_ch)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout(self.norm(self.relu(self.conv(x))))
        return self.temb_fusion(x, temb) if self.fuse else x


class Block(nn.Module):
    """n_stages stages; with `temb`, every stage but the last fuses the timestep (the released layout)."""

    def __init__(self, n_stages: int, in_ch: int, out_ch: int, norm: str, temb: bool, keep_unused: bool):
        super().__init__()
        self.ops = nn.ModuleList(
            Stage(in_ch if i == 0 else out_ch, out_ch, norm, fuse=temb and i < n_stages - 1,
                  keep_unused=temb and keep_unused)
            for i in range(n_stages))

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        for stage in self.ops:
            x = stage(x, temb)
        return x


class Resample(nn.Module):
    """Stride-2 conv (down) or transposed conv (up) → ReLU → norm [→ timestep fusion]."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, up: bool, temb: bool):
        super().__init__()
        conv = nn.ConvTranspose3d(in_ch, out_ch, 2, stride=2) if up else nn.Conv3d(in_ch, out_ch, 2, stride=2)
        ops: list[nn.Module] = [conv, nn.ReLU(inplace=True), make_norm(norm, out_ch)]
        if temb:
            ops.append(TembFusion(out_ch))
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        for op in self.ops:
            x = op(x, temb) if isinstance(op, TembFusion) else op(x)
        return x


class Stem(nn.Module):
    """One conv stage at full resolution (x1, the finest skip) and, for the diffusion stem, the timestep MLP.
    The diffusion stem takes cat([image, x_t]) on channels (image first)."""

    def __init__(self, in_ch: int, n_filters: int, norm: str, with_time: bool, keep_unused: bool):
        super().__init__()
        if with_time:
            self.temb = nn.Module()
            self.temb.dense = nn.ModuleList([nn.Linear(TEMB_IN, TEMB_OUT), nn.Linear(TEMB_OUT, TEMB_OUT)])
        # A one-stage block: its only stage is the last one, so it never fuses the timestep.
        self.emb = Block(1, in_ch, n_filters, norm, temb=True, keep_unused=keep_unused)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                image: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        temb = None
        if t is not None:
            dense = self.temb.dense
            temb = dense[1](swish(dense[0](timestep_embedding(t))))
        if image is not None:
            x = torch.cat([image, x], dim=1)
        return self.emb(x, temb), temb


class Encoder(nn.Module):
    """The shared encoder: x1 (the stem output) plus four down blocks; timestep-conditioned when temb is given.
    Returns the five skips, finest first. Stage depths 2-3-3-3 (after the stem)."""

    def __init__(self, n_filters: int, norm: str, has_dropout: bool, keep_unused: bool, dropout_rate: float = 0.5):
        super().__init__()
        f, k = n_filters, keep_unused
        self.has_dropout = has_dropout
        self.block_one_dw = Resample(f, 2 * f, norm, up=False, temb=True)
        self.block_two = Block(2, 2 * f, 2 * f, norm, True, k)
        self.block_two_dw = Resample(2 * f, 4 * f, norm, up=False, temb=True)
        self.block_three = Block(3, 4 * f, 4 * f, norm, True, k)
        self.block_three_dw = Resample(4 * f, 8 * f, norm, up=False, temb=True)
        self.block_four = Block(3, 8 * f, 8 * f, norm, True, k)
        self.block_four_dw = Resample(8 * f, 16 * f, norm, up=False, temb=True)
        self.block_five = Block(3, 16 * f, 16 * f, norm, True, k)
        self.dropout = nn.Dropout3d(p=dropout_rate)

    def forward(self, x1: torch.Tensor, temb: torch.Tensor | None = None) -> list[torch.Tensor]:
        x2 = self.block_two(self.block_one_dw(x1, temb), temb)
        x3 = self.block_three(self.block_two_dw(x2, temb), temb)
        x4 = self.block_four(self.block_three_dw(x3, temb), temb)
        x5 = self.block_five(self.block_four_dw(x4, temb), temb)
        if self.has_dropout:
            x5 = self.dropout(x5)
        return [x1, x2, x3, x4, x5]


class Decoder(nn.Module):
    """Additive-skip V-Net decoder, stage depths 3-3-2-1, 1×1×1 output conv. `temb=True` builds D_ξ's
    timestep-conditioned variant; the plain one (D_ψ, D_θ) has the same parameter names minus the fusions."""

    def __init__(self, n_classes: int, n_filters: int, norm: str, has_dropout: bool, temb: bool = False,
                 keep_unused: bool = True, dropout_rate: float = 0.5):
        super().__init__()
        f, k = n_filters, keep_unused
        self.has_dropout = has_dropout
        self.block_five_up = Resample(16 * f, 8 * f, norm, up=True, temb=temb)
        self.block_six = Block(3, 8 * f, 8 * f, norm, temb, k)
        self.block_six_up = Resample(8 * f, 4 * f, norm, up=True, temb=temb)
        self.block_seven = Block(3, 4 * f, 4 * f, norm, temb, k)
        self.block_seven_up = Resample(4 * f, 2 * f, norm, up=True, temb=temb)
        self.block_eight = Block(2, 2 * f, 2 * f, norm, temb, k)
        self.block_eight_up = Resample(2 * f, f, norm, up=True, temb=temb)
        self.block_nine = Block(1, f, f, norm, temb, k)
        self.out_conv = nn.Conv3d(f, n_classes, 1)
        self.dropout = nn.Dropout3d(p=dropout_rate)

    def forward_features(self, skips: list[torch.Tensor],
                         temb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2, x3, x4, x5 = skips
        x = self.block_six(self.block_five_up(x5, temb) + x4, temb)
        x = self.block_seven(self.block_six_up(x, temb) + x3, temb)
        x = self.block_eight(self.block_seven_up(x, temb) + x2, temb)
        x9 = self.block_nine(self.block_eight_up(x, temb) + x1, temb)
        if self.has_dropout:
            x9 = self.dropout(x9)
        return self.out_conv(x9), x9

    def forward(self, skips: list[torch.Tensor], temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_features(skips, temb)[0]


class DenoiseModel(nn.Module):
    """The diffusion path: [image ‖ x_t] + t → stem → shared encoder (temb) → D_ξ (temb) → x0 logits."""

    def __init__(self, in_channels: int, n_classes: int, n_filters: int, norm: str, has_dropout: bool,
                 keep_unused: bool):
        super().__init__()
        self.embedding_diffusion = Stem(in_channels + n_classes, n_filters, norm, with_time=True,
                                        keep_unused=keep_unused)
        self.encoder = Encoder(n_filters, norm, has_dropout, keep_unused)
        self.decoder = Decoder(n_classes, n_filters, norm, has_dropout, temb=True, keep_unused=keep_unused)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x, temb = self.embedding_diffusion(x_t, t=t, image=image)
        return self.decoder(self.encoder(x, temb), temb)


MODES = ("theta", "psi", "xi")


class DiffVNet(nn.Module):
    """The whole A&D network. `forward(image, mode=...)`:

    - "theta": image stem → encoder → D_θ (the default; what inference runs);
    - "psi":   image stem → encoder → D_ψ;
    - "xi":    forward(image, x_t, t, mode="xi"): diffusion stem(cat[image, x_t], t) → encoder(temb) → D_ξ(temb).

    All modes go through `forward` so that a DistributedDataParallel wrapper sees every pass.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_filters: int = 32, norm: str = "batch",
                 has_dropout: bool = True, reference_layout: bool = True):
        super().__init__()
        self.n_classes = n_classes
        self.embedding = Stem(in_channels, n_filters, norm, with_time=reference_layout, keep_unused=reference_layout)
        self.decoder_theta = Decoder(n_classes, n_filters, norm, has_dropout, temb=False)
        self.decoder_psi = Decoder(n_classes, n_filters, norm, has_dropout, temb=False)
        self.denoise_model = DenoiseModel(in_channels, n_classes, n_filters, norm, has_dropout, reference_layout)

    # Named views of the parts, for the method and the tests.
    @property
    def encoder(self) -> Encoder:
        return self.denoise_model.encoder

    @property
    def decoder_xi(self) -> Decoder:
        return self.denoise_model.decoder

    def forward(self, image: torch.Tensor, x_t: torch.Tensor | None = None, t: torch.Tensor | None = None,
                mode: str = "theta") -> torch.Tensor:
        if mode == "xi":
            if x_t is None or t is None:
                raise ValueError("mode 'xi' needs the noisy label x_t and the timesteps t")
            return self.denoise_model(x_t, t, image)
        x1, _ = self.embedding(image)
        skips = self.encoder(x1, None)
        if mode == "theta":
            return self.decoder_theta(skips)
        if mode == "psi":
            return self.decoder_psi(skips)
        raise ValueError(f"unknown DiffVNet mode {mode!r}; expected one of {MODES}")


class DiffVNetInference(nn.Module):
    """Test-time A&D network: image stem → shared encoder → D_θ. Holds only those weights; its state_dict keys
    are `embedding.*`, `encoder.*`, `decoder_theta.*`."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_filters: int = 32, norm: str = "batch",
                 reference_layout: bool = True):
        super().__init__()
        self.embedding = Stem(in_channels, n_filters, norm, with_time=reference_layout, keep_unused=reference_layout)
        self.encoder = Encoder(n_filters, norm, has_dropout=False, keep_unused=reference_layout)
        self.decoder_theta = Decoder(n_classes, n_filters, norm, has_dropout=False, temb=False)

    @classmethod
    def sharing(cls, net: DiffVNet, inference: "DiffVNetInference") -> "DiffVNetInference":
        """Point `inference`'s parts at `net`'s (same tensors, no copy)."""
        inference.embedding = net.embedding
        inference.encoder = net.encoder
        inference.decoder_theta = net.decoder_theta
        return inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, _ = self.embedding(x)
        return self.decoder_theta(self.encoder(x1, None))


register_network("diffvnet")(DiffVNet)
register_network("diffvnet-infer")(DiffVNetInference)

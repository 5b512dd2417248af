"""The multi-task segmentation network: one shared encoder, one full decoder per task group (task-decoupled).

Variants (chosen by `ModelConfig.variant`):
- `small`: a compact residual CNN encoder written here (no external dependency), for CPU training and inference.
- `base`: a Swin Transformer encoder from `timm` (optional `gpu` extra), RetSAM-sized; imported lazily.

Output: `forward(x) -> {"seg": (N, len(SEG_CHANNELS), H, W) logits, "fovea": (N, 2) normalised (x, y) in [0, 1]}`.
Every segmentation channel is an independent sigmoid (multi-label), so partial labels mask cleanly per channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from retsam_core.preprocess import angular_canvas_side
from retsam_core.targets import LESION_TARGETS, PHENOTYPE_TARGETS

# Task groups -> channels, in output order. Never reorder: the weights file stores this order in its card.
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "vessels": ("vessel", "artery", "vein"),
    "disc_cup": ("optic_disc", "optic_cup"),
    "lesions": LESION_TARGETS,
    "phenotypes": PHENOTYPE_TARGETS,
}
SEG_CHANNELS: tuple[str, ...] = tuple(c for g in TASK_GROUPS.values() for c in g)
MEAN = (0.426, 0.297, 0.213)
STD = (0.277, 0.202, 0.169)


@dataclass
class ModelConfig:
    variant: str = "small"  # "small" (CNN, CPU) or "base" (timm Swin, GPU)
    resolution: int = 512  # the model's own input side; segment() resizes the canvas to it
    stem_unshuffle: int = 2  # small: lossless space-to-depth of the input (all convs run at 1/2 res), pixel-shuffle out
    enc_channels: tuple[int, ...] = (24, 32, 64, 96, 128)  # small: scales 1, 1/2, 1/4, 1/8, 1/16 of the unshuffled grid
    enc_blocks: tuple[int, ...] = (1, 1, 1, 2, 1)
    dec_channels: tuple[int, ...] = (64, 48, 32, 16)  # decoder widths, deepest skip first
    fovea_head: bool = True
    standardise_input: bool = False  # canvases pass through intensity.standardise_intensity (training and inference)
    px_per_degree: float | None = None  # angular-scale canvas: side = px_per_degree x the camera's field angle (see canvas_side)
    vessel_refiner: int = 0  # > 0: an IterNet-style refiner of this width corrects the vessel logits (see VesselRefiner)
    swin_name: str = "swin_base_patch4_window7_224"  # base variant only
    task_groups: dict = field(default_factory=lambda: {k: list(v) for k, v in TASK_GROUPS.items()})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["enc_channels"], d["enc_blocks"], d["dec_channels"] = map(list, (self.enc_channels, self.enc_blocks, self.dec_channels))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("enc_channels", "enc_blocks", "dec_channels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for g in self.task_groups.values() for c in g)

    def canvas_side(self, field_angle_deg: float | None) -> int:
        """The canvas side this model wants for a camera: `resolution` for a fixed-size model; for an angular-scale
        model, the field angle times `px_per_degree` (a multiple of 32), so a vessel of a given size in degrees
        covers the same pixels whichever camera took it."""
        return angular_canvas_side(self.px_per_degree, field_angle_deg, self.resolution)


def _cbr(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = _cbr(c, c)
        self.c2 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(x + self.c2(self.c1(x)), inplace=True)


class SmallEncoder(nn.Module):
    """Compact residual CNN on the space-to-depth input: stage i at stride 2**i of that grid."""

    def __init__(self, chs, blocks, cin=3):
        super().__init__()
        stages = []
        for i, (c, b) in enumerate(zip(chs, blocks)):
            layers = [_cbr(cin, c, stride=1 if i == 0 else 2)] + [ResBlock(c) for _ in range(b)]
            stages.append(nn.Sequential(*layers))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(chs)

    def forward(self, x):
        feats = []
        for s in self.stages:
            x = s(x)
            feats.append(x)
        return feats


class SwinEncoder(nn.Module):
    """timm Swin features (strides 4..32) plus a light full/half-resolution CNN stem for thin structures."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise ImportError(
                "the 'base' (Swin) variant needs timm: pip install 'retsam[gpu]' (timm + torchvision); "
                "use variant='small' on CPU"
            ) from exc
        self.swin = timm.create_model(
            cfg.swin_name, pretrained=False, features_only=True, img_size=cfg.resolution, strict_img_size=False
        )
        sw = tuple(self.swin.feature_info.channels())
        self.stem = nn.Sequential(_cbr(3, 16), _cbr(16, 32, stride=2))
        self.out_channels = (16, 32) + sw[:3]  # full, 1/2, 1/4, 1/8, 1/16 (1/32 dropped)

    def forward(self, x):
        s0 = self.stem[0](x)
        s1 = self.stem[1](s0)
        fs = [f.permute(0, 3, 1, 2) if f.shape[-1] != f.shape[1] and f.ndim == 4 and f.shape[1] == f.shape[2] else f
              for f in self.swin(x)]
        return [s0, s1] + fs[:3]


class Decoder(nn.Module):
    """UNet-style decoder using every encoder scale (skip connections), ending in `n_out` logits at full res."""

    def __init__(self, enc_chs, dec_chs, n_out):
        super().__init__()
        deep = enc_chs[-1]
        blocks, cin = [], deep
        n = len(dec_chs)
        for i, (skip_c, c) in enumerate(zip(reversed(enc_chs[:-1]), dec_chs)):
            # the finest scale gets one conv only: it dominates the cost
            blocks.append(nn.Sequential(_cbr(cin + skip_c, c), _cbr(c, c)) if i < n - 1 else _cbr(cin + skip_c, c))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, n_out, 1)

    def forward(self, feats, with_features: bool = False):
        x = feats[-1]
        for blk, skip in zip(self.blocks, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = blk(torch.cat([x, skip], 1))
        return (self.head(x), x) if with_features else self.head(x)


class VesselRefiner(nn.Module):
    """A small U-Net that reads the image, the vessel decoder's probabilities and its last features (all on the
    decoder's output grid) and adds a correction to the vessel logits: IterNet's refinement (Li et al., WACV 2020),
    which joins broken thin vessels that a single pass leaves. Its head starts at zero, so a network given a refiner
    computes exactly what it computed before, and the refiner alone can be trained on a frozen model."""

    def __init__(self, c_image: int, c_logits: int, c_features: int, width: int):
        super().__init__()
        w = width
        self.e0 = _cbr(c_image + c_logits + c_features, w)
        self.e1 = nn.Sequential(_cbr(w, 2 * w, stride=2), ResBlock(2 * w))
        self.e2 = nn.Sequential(_cbr(2 * w, 3 * w, stride=2), ResBlock(3 * w))
        self.d1 = _cbr(5 * w, 2 * w)
        self.d0 = _cbr(3 * w, w)
        self.head = nn.Conv2d(w, c_logits, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, image, logits, features):
        up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        x0 = self.e0(torch.cat([image, torch.sigmoid(logits), features], 1))
        x1 = self.e1(x0)
        x2 = self.e2(x1)
        y1 = self.d1(torch.cat([up(x2, x1), x1], 1))
        y0 = self.d0(torch.cat([up(y1, x0), x0], 1))
        return logits + self.head(y0)


class FoveaHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, 64), nn.ReLU(inplace=True), nn.Linear(64, 2))

    def forward(self, f):
        return torch.sigmoid(self.mlp(f.mean(dim=(2, 3))))


class RetSAMNet(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        if cfg.variant == "small":
            self.encoder = SmallEncoder(cfg.enc_channels, cfg.enc_blocks, 3 * cfg.stem_unshuffle**2)
            self.unshuffle = cfg.stem_unshuffle
        elif cfg.variant == "base":
            self.encoder = SwinEncoder(cfg)
            self.unshuffle = 1
        else:
            raise ValueError(f"unknown variant {cfg.variant!r} (small | base)")
        enc = self.encoder.out_channels
        u2 = self.unshuffle**2
        self.decoders = nn.ModuleDict({g: Decoder(enc, cfg.dec_channels, len(ch) * u2) for g, ch in cfg.task_groups.items()})
        self.fovea = FoveaHead(enc[-1]) if cfg.fovea_head else None
        self.vessel_refiner = None
        if cfg.vessel_refiner and "vessels" in cfg.task_groups:
            self.vessel_refiner = VesselRefiner(3 * u2, len(cfg.task_groups["vessels"]) * u2, cfg.dec_channels[-1], cfg.vessel_refiner)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.skip_groups: set[str] = set()  # inference-only: groups whose channels are all untrained

    @property
    def channels(self) -> tuple[str, ...]:
        return self.cfg.channels

    def normalise(self, x_uint8_or_float: torch.Tensor) -> torch.Tensor:
        x = x_uint8_or_float.float()
        if x_uint8_or_float.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`x`: (N, 3, H, W), float already normalised (see `normalise`); H, W divisible by 32 (small)."""
        u = self.unshuffle
        xu = F.pixel_unshuffle(x, u) if u > 1 else x
        feats = self.encoder(xu)
        outs = []
        for g, ch in self.cfg.task_groups.items():
            if g in self.skip_groups:
                outs.append(x.new_full((x.shape[0], len(ch)) + x.shape[-2:], -20.0))
            else:
                if g == "vessels" and self.vessel_refiner is not None:
                    y, last = self.decoders[g](feats, with_features=True)
                    y = self.vessel_refiner(xu, y, last)
                else:
                    y = self.decoders[g](feats)
                outs.append(F.pixel_shuffle(y, u) if u > 1 else y)
        out = {"seg": torch.cat(outs, 1)}
        if self.fovea is not None:
            out["fovea"] = self.fovea(feats[-1])
        return out

"""Weights file (safetensors) + JSON model card, loading from a local path or any fsspec URI, and the
`LearnedSegmenter` that implements the `Segmenter` protocol.

Card (`<stem>.json` beside `<stem>.safetensors`): architecture config, channels and their task groups, which
channels were trained on which datasets (+ licences), untrained heads, metrics on test splits, the classical
baseline on the same splits, training time/hardware, and the sha256 of the weights file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from retsam_core.finishing import Finisher, PendingMasks, evidence_support, finish_all, quantise
from retsam_core.intensity import standardise_intensity
from retsam_core.model.network import ModelConfig, RetSAMNet
from retsam_core.preprocess import to_multiple
from retsam_core.segmenter import SegmenterInfo
from retsam_core.targets import TARGETS

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_NAME = "retsam-small"
FOVEA_RADIUS_FRAC = 0.02  # fovea disc radius as a fraction of the canvas side
# Test-time augmentation: the flips whose probabilities are averaged (dims of an (N, C, H, W) tensor). "flip"
# costs 4 forward passes for about +0.5 vessel and +0.3 artery/vein DSC points (docs/model_eval/known_gaps.md).
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {"none": ((),), "flip": ((), (3,), (2,), (2, 3))}


def cpu_bf16_instructions() -> list[str] | None:
    """The CPU's bf16 instruction sets named in /proc/cpuinfo ([] when none), None where that file does not exist."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return None
    flags = set(info.read_text(errors="replace").split())
    return sorted(f for f in ("avx512_bf16", "amx_bf16") if f in flags)


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def card_path_for(weights_uri: str) -> str:
    return weights_uri[: -len(".safetensors")] + ".json" if weights_uri.endswith(".safetensors") else weights_uri + ".json"


def save_weights(model: RetSAMNet, path: str | os.PathLike, card: dict) -> dict:
    """Write `path` (.safetensors, float32) and its card; fills card['sha256'], ['architecture'], ['channels']."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().float() if v.is_floating_point() else v.detach().contiguous()
             for k, v in model.state_dict().items()}
    data = save(state, metadata={"format": "pt", "name": card.get("name", DEFAULT_NAME)})
    path.write_bytes(data)
    card = dict(card)
    card["architecture"] = model.cfg.to_dict()
    card["channels"] = list(model.channels)
    card["weights_file"] = path.name
    card["sha256"] = sha256_bytes(data)
    card["size_bytes"] = len(data)
    Path(card_path_for(str(path))).write_text(json.dumps(card, indent=1))
    return card


def read_uri(uri: str, storage_options: dict | None = None) -> bytes:
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://")).read_bytes()
    import fsspec

    with fsspec.open(uri, "rb", **(storage_options or {})) as f:
        return f.read()


def load_model(uri: str, storage_options: dict | None = None, verify_hash: bool = True) -> tuple[RetSAMNet, dict]:
    """Model + card from a local path or fsspec URI (s3://, gs://, https://, file://). Verifies the sha256."""
    from safetensors.torch import load

    data = read_uri(str(uri), storage_options)
    card = json.loads(read_uri(card_path_for(str(uri)), storage_options))
    digest = sha256_bytes(data)
    if verify_hash and card.get("sha256") and card["sha256"] != digest:
        raise ValueError(f"weights hash mismatch for {uri}: card says {card['sha256'][:12]}, file is {digest[:12]}")
    cfg = ModelConfig.from_dict(card["architecture"])
    model = RetSAMNet(cfg)
    missing, unexpected = model.load_state_dict(load(data), strict=False)
    if unexpected or [m for m in missing if not m.endswith(("mean", "std"))]:
        raise ValueError(f"weights do not match the card's architecture: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.eval()
    card["sha256"] = digest
    return model, card


def card_beats_classical(card: dict, margin: float = 0.0) -> bool:
    """True when the card's vessel DSC on a test split beats the classical segmenter's (same split)."""
    cmp = card.get("comparison", {}).get("vessel", {})
    try:
        return float(cmp["learned_dsc"]) > float(cmp["classical_dsc"]) + margin
    except (KeyError, TypeError, ValueError):
        return False


def default_weights_path() -> Path | None:
    """The shipped weights, only when their card says they beat the classical segmenter on vessels; else None."""
    w = WEIGHTS_DIR / f"{DEFAULT_NAME}.safetensors"
    c = WEIGHTS_DIR / f"{DEFAULT_NAME}.json"
    if not (w.exists() and c.exists()):
        return None
    try:
        card = json.loads(c.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return w if card_beats_classical(card) else None


class LearnedSegmenter:
    """`Segmenter` over a `RetSAMNet`: canvas (N, S, S, 3) -> model resolution -> masks at S for `info.provides`."""

    def __init__(self, model: RetSAMNet, card: dict, device: str | None = None, threshold: float = 0.5, bf16: bool = True,
                 tta: str = "none", cpu_bf16: bool = False):
        if tta not in TTA_FLIPS:
            raise ValueError(f"unknown test-time augmentation {tta!r}; one of {sorted(TTA_FLIPS)}")
        self.tta = tta
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        # bf16 autocast: on a GPU by default; on the CPU only when asked ("+bf16"): about 1.6x faster where the CPU has
        # bf16 instructions (AVX512-BF16, AMX), slower where it emulates them, and the masks move a little
        # (docs/model_eval/cpu_bf16/)
        self.cpu_bf16 = cpu_bf16
        self.bf16 = (self.device.type == "cuda" and bf16) or (self.device.type == "cpu" and cpu_bf16)
        if self.device.type == "cpu" and cpu_bf16 and cpu_bf16_instructions() == []:
            warnings.warn("+bf16 on a CPU without bf16 instructions (no avx512_bf16 / amx_bf16 in /proc/cpuinfo): "
                          "emulated, likely slower than fp32", RuntimeWarning, stacklevel=2)
        self.card = card
        untrained = set(card.get("untrained", []))
        channels = list(model.channels)
        provides = [c for c in channels if c not in untrained]
        if model.fovea is not None and "fovea" not in untrained:
            provides.append("fovea")
        flagged = [t for t in TARGETS if t not in provides]
        self.keep_probabilities = False  # evaluation turns it on to score AUPR from `last_probabilities`
        self.last_probabilities = None
        self._last_fovea = None
        self.thresholds = {c: float(card.get("thresholds", {}).get(c, threshold)) for c in channels}
        self.info = SegmenterInfo(
            name=card.get("name", DEFAULT_NAME) + ("" if tta == "none" else f"+{tta}") + ("+bf16" if cpu_bf16 else ""),
            version=str(card.get("version", "0")), weights_hash=card.get("sha256", ""),
            resolution=model.cfg.resolution, provides=tuple(provides), untrained=tuple(flagged),
            px_per_degree=model.cfg.px_per_degree,
        )
        self.emit: set[str] = set(provides)
        self.restrict_to(provides)  # no compute for decoders whose channels are all untrained

    def restrict_to(self, targets) -> None:
        """Emit only `targets` (a combined segmenter that takes the rest elsewhere), and do not spend compute on
        decoders none of them needs, nor on A/V separation when neither is wanted."""
        self.emit = set(targets) & set(self.info.provides)
        needed = self.emit | ({"vessel"} if self.emit & {"artery", "vein"} else set())
        self.model.skip_groups = {g for g, ch in self.model.cfg.task_groups.items() if not (set(ch) & needed)}

    @classmethod
    def from_uri(cls, uri: str, device: str | None = None, storage_options: dict | None = None,
                 tta: str = "none", cpu_bf16: bool = False) -> "LearnedSegmenter":
        model, card = load_model(str(uri), storage_options)
        return cls(model, card, device, tta=tta, cpu_bf16=cpu_bf16)

    @torch.no_grad()
    def _forward(self, images: np.ndarray, fovs: np.ndarray | None = None) -> torch.Tensor:
        """(N, S, S, 3) uint8 canvases -> (N, C, R, R) float32 probabilities on the device (bf16 autocast on a GPU,
        and on the CPU when asked).
        `fovs` (N, S, S) bool: needed by a model that standardises its input (else: the canvas's non-black pixels)."""
        S = images.shape[1]
        # a fixed-size model resamples every canvas to its resolution; an angular-scale one runs at the canvas it is
        # given (cut at `info.canvas_side(field angle)`), only rounded to the multiple of 32 the encoder needs
        R = self.model.cfg.resolution if self.model.cfg.px_per_degree is None else to_multiple(S)
        small = np.stack([img if S == R else cv2.resize(img, (R, R), interpolation=cv2.INTER_AREA if S > R else cv2.INTER_LINEAR)
                          for img in images])
        if self.model.cfg.standardise_input:
            fovs = np.asarray(fovs, bool) if fovs is not None else images.any(axis=-1)
            if S != R:
                fovs = np.stack([cv2.resize(f.astype(np.uint8), (R, R), interpolation=cv2.INTER_NEAREST) > 0 for f in fovs])
            small = np.stack([standardise_intensity(img, f) for img, f in zip(small, fovs)])
        x = self.model.normalise(torch.from_numpy(small).to(self.device).permute(0, 3, 1, 2))
        flips = TTA_FLIPS[self.tta]
        probs, fovea = None, None
        for dims in flips:  # the mean of the probabilities over the flipped copies, each flipped back
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(torch.flip(x, dims) if dims else x)
            p = torch.sigmoid(out["seg"].float())
            p = torch.flip(p, dims) if dims else p
            probs = p if probs is None else probs + p
            if out.get("fovea") is not None:  # (N, 2) as (x, y) fractions of the side: a flip mirrors one of them
                f = out["fovea"].float().clone()
                for d in dims:
                    f[:, 0 if d == 3 else 1] = 1.0 - f[:, 0 if d == 3 else 1]
                fovea = f if fovea is None else fovea + f
        probs = probs / len(flips)
        self._last_fovea = None if fovea is None else fovea / len(flips)
        # (N, C, R, R) float16 of the latest call, for AUPR in evaluation; off by default (bytes across the bus)
        self.last_probabilities = probs.half().cpu().numpy() if self.keep_probabilities else None
        return probs

    def kept_probabilities(self, target: str) -> np.ndarray | None:
        """(N, R, R) float16 probabilities of `target` from the latest call, if `keep_probabilities` was on."""
        if self.last_probabilities is None or target not in self.model.channels:
            return None
        return self.last_probabilities[:, list(self.model.channels).index(target)]

    def probabilities(self, images: np.ndarray, fovs: np.ndarray | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 canvases -> (N, C, R, R) float16 probabilities at the model resolution R."""
        return self._forward(images, fovs).half().cpu().numpy()

    def _canvas_maps(self, probs: torch.Tensor, targets: list[str], size: int) -> torch.Tensor:
        """The `targets` channels at canvas `size`. Left where the network ran when no resize is needed, so that
        thresholds, the FOV cut and the A/V quantisation run there too and only bytes cross the bus (on a GPU the
        segmentation actor's serial host work is what bounds it); else resized on the host (cv2)."""
        ch = list(self.model.channels)
        p = probs[:, [ch.index(t) for t in targets]]
        if p.shape[-1] == size:
            return p
        p = p.cpu().numpy()
        return torch.from_numpy(np.stack([[cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in img]
                                          for img in p]))

    def finisher(self) -> Finisher:
        """The host-side step after the network (A/V separation, the card's post-processing), as plain data."""
        fitted = self.card.get("av_segment_classifier")  # None: segments vote with the network margin alone
        return Finisher(av_classifier=fitted["classifier"] if fitted else None,
                        postprocess=dict(self.card.get("postprocess", {})))

    def segment_pending(self, images: np.ndarray, fovs: np.ndarray) -> list[PendingMasks]:
        """The network's part of `segment`: thresholded masks inside the FOV and, when arteries and veins are
        emitted, their probabilities on the vessel union as evidence for `finisher()`."""
        images = np.asarray(images)
        fovs = np.asarray(fovs, bool)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, S, S, 3) uint8, got {images.shape}")
        S = images.shape[1]
        probs = self._forward(images, fovs)
        targets = [t for t in self.info.provides if t in self.emit and t != "fovea"]
        with_av = "artery" in targets and "vein" in targets
        hard, av = None, {}
        if targets:
            p = self._canvas_maps(probs, targets, S)
            thr = torch.tensor([self.thresholds[t] for t in targets], device=p.device).view(1, -1, 1, 1)
            hard_t = (p >= thr) & torch.from_numpy(fovs).to(p.device)[:, None]
            if with_av:
                union = evidence_support({t: hard_t[:, targets.index(t)] for t in ("artery", "vein")})
                av = {f"p_{t}": quantise(p[:, targets.index(t)], union).cpu().numpy() for t in ("artery", "vein")}
            hard = hard_t.cpu().numpy()
        results = []
        for i in range(images.shape[0]):
            masks = {t: hard[i, k] for k, t in enumerate(targets)}
            evidence = {k: v[i] for k, v in av.items()}
            if "fovea" in self.emit and self._last_fovea is not None:
                fx, fy = (self._last_fovea[i].cpu().numpy() * S).tolist()
                yy, xx = np.ogrid[:S, :S]
                masks["fovea"] = ((xx - fx) ** 2 + (yy - fy) ** 2 <= (FOVEA_RADIUS_FRAC * S) ** 2) & fovs[i]
            results.append(PendingMasks(masks, evidence))
        return results

    def segment(self, images: np.ndarray, fovs: np.ndarray) -> list[dict[str, np.ndarray]]:
        return finish_all(self.finisher(), self.segment_pending(images, fovs), images, fovs)

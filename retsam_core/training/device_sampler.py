"""Patches cut on the training device: the same draws as `PatchSampler`, warped with `grid_sample` on the GPU.

On one GPU, cutting patches on the CPU bounded training (about 280 patches/s from 14 threads against a GPU that
runs the small network at hundreds of 1024 px images per second). Here every training canvas, label, loss weight
and FOV lives on the device as uint8 (about 32 MB per 1024 px image with 14 channels); the CPU only draws the
random numbers (record, centre, rotation, scale, flip, colour) exactly as `PatchSampler` does, and the device does
the warps and the colour maps. Batches keep `PatchSampler`'s uint8 contract, so the trainer does not change.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from retsam_core.training.data import PatchSampler


def _to_normalised(M: np.ndarray, res: int, patch: int) -> np.ndarray:
    """cv2-style (2, 3) canvas->patch pixel map -> `affine_grid` theta (patch -> canvas, align_corners=False)."""
    inv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))  # patch pixel -> canvas pixel
    canvas_to_norm = np.array([[2 / res, 0, 1 / res - 1], [0, 2 / res, 1 / res - 1], [0, 0, 1]])
    norm_to_patch = np.array([[patch / 2, 0, (patch - 1) / 2], [0, patch / 2, (patch - 1) / 2], [0, 0, 1]])
    return (canvas_to_norm @ inv @ norm_to_patch)[:2]


class DevicePatchSampler:
    """`next_batch()` like `PatchSampler.next_batch()`, computed on `device`."""

    def __init__(self, sampler: PatchSampler, device: torch.device):
        self.s, self.device = sampler, torch.device(device)
        C = len(sampler.channels)
        self.row = {id(r): i for i, r in enumerate(sampler.records)}
        # canvases of different sides (an angular-scale model's cameras) sit in the top-left corner of the largest:
        # canvas pixel coordinates, hence the patch maps, stay those of each record; the rest is black, weight 0
        res = max(r.image.shape[0] for r in sampler.records)
        n = len(sampler.records)
        image = torch.zeros((n, 3, res, res), dtype=torch.uint8)
        fov = torch.zeros((n, 1, res, res), dtype=torch.uint8)
        labels = torch.zeros((n, C, res, res), dtype=torch.uint8)
        weights = torch.zeros((n, C, res, res), dtype=torch.uint8)
        self.ann = torch.zeros((n, C), dtype=torch.bool)
        for i, rec in enumerate(sampler.records):
            r = rec.image.shape[0]
            image[i, :, :r, :r] = torch.from_numpy(rec.image).permute(2, 0, 1)
            fov[i, 0, :r, :r] = torch.from_numpy(rec.fov.astype(np.uint8))
            for c, lab, weight, ignore in sampler.trained_labels(rec):
                self.ann[i, c] = True
                labels[i, c, :r, :r] = torch.from_numpy(lab)
                weights[i, c, :r, :r] = weight
                if ignore is not None:
                    weights[i, c, :r, :r][torch.from_numpy(ignore)] = 0
        self.image, self.fov = image.to(self.device), fov.to(self.device)
        self.labels, self.weights = labels.to(self.device), weights.to(self.device)
        self.res = res

    def _draws(self):
        s, a = self.s, self.s.aug
        rows, thetas, colour, datasets = [], [], [], []
        for _ in range(s.batch):
            d = s.ds_names[s.rng.choice(len(s.ds_names), p=s.ds_p)]
            rec = s.by_ds[d][s.rng.integers(len(s.by_ds[d]))]
            rows.append(self.row[id(rec)])
            thetas.append(_to_normalised(s.draw_affine(rec), self.res, s.patch))
            blur = s.rng.random() < a.blur_p
            colour.append([*(1 + s.rng.uniform(-a.gain, a.gain, 3)), 1 + s.rng.uniform(-a.contrast, a.contrast),
                           s.rng.uniform(-a.brightness, a.brightness), s.rng.uniform(*a.gamma),
                           s.rng.uniform(*a.blur_sigma) if blur else 0.0])
            datasets.append(d)
        return rows, np.stack(thetas), np.array(colour), datasets

    def _blur(self, img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Per-sample Gaussian blur (sigma 0 = none) as one grouped separable convolution."""
        if not bool((sigma > 0).any()):
            return img
        B, C, P, _ = img.shape
        r = int(np.ceil(3 * max(self.s.aug.blur_sigma)))
        t = torch.arange(-r, r + 1, device=img.device, dtype=img.dtype)
        k = torch.exp(-0.5 * (t[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
        k = torch.where(sigma[:, None] > 0, k, (t[None] == 0).to(img.dtype))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, 2r+1)
        x = F.conv2d(img.reshape(1, B * C, P, P), k[:, None, None, :], padding=(0, r), groups=B * C)
        x = F.conv2d(x, k[:, None, :, None], padding=(r, 0), groups=B * C)
        return x.reshape(B, C, P, P)

    @torch.no_grad()
    def next_batch(self):
        rows, thetas, colour, datasets = self._draws()
        P, dev = self.s.patch, self.device
        idx = torch.tensor(rows, device=dev)
        theta = torch.from_numpy(thetas).to(dev, torch.float32)
        grid = F.affine_grid(theta, (len(rows), 1, P, P), align_corners=False)
        warp = lambda t, mode: F.grid_sample(t[idx].float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
        img = warp(self.image, "bilinear") / 255.0
        fov = warp(self.fov, "nearest") > 0.5
        col = torch.from_numpy(colour).to(dev, torch.float32)
        img = img * col[:, :3, None, None]
        f = fov.float()
        mean = (img * f).sum((2, 3), keepdim=True) / f.sum((2, 3), keepdim=True).clamp(min=1)
        img = (img - mean) * col[:, 3, None, None, None] + mean + col[:, 4, None, None, None]
        img = img.clamp(0, 1) ** col[:, 5, None, None, None]
        img = self._blur(img, col[:, 6]) * f
        x = (img * 255).round().to(torch.uint8)
        y = warp(self.labels, "bilinear").round().to(torch.uint8)
        w = warp(self.weights, "nearest").to(torch.uint8)
        return x, y, w, self.ann[rows].to(dev), datasets

"""Metrics on boolean masks (and probabilities for AUPR).

Conventions: `valid` (optional bool mask) restricts every count; an empty prediction on an empty ground truth
scores DSC = IoU = 1 (nothing to find, nothing found); sensitivity is NaN when the ground truth is empty.
"""

from __future__ import annotations

import numpy as np


def _counts(pred, gt, valid=None):
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if valid is not None:
        valid = np.asarray(valid, bool)
        pred, gt = pred & valid, gt & valid
        n = int(valid.sum())
    else:
        n = pred.size
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    tn = n - tp - fp - fn
    return tp, fp, fn, tn


def dice(pred, gt, valid=None) -> float:
    tp, fp, fn, _ = _counts(pred, gt, valid)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def binary_metrics(pred, gt, valid=None) -> dict:
    tp, fp, fn, tn = _counts(pred, gt, valid)
    nan = float("nan")
    return {
        "dsc": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn),
        "sensitivity": tp / (tp + fn) if tp + fn else nan,
        "specificity": tn / (tn + fp) if tn + fp else nan,
        "gt_pixels": tp + fn,
        "pred_pixels": tp + fp,
    }


def cldice(pred, gt, valid=None) -> float:
    """Centreline Dice (Shit et al. 2021): harmonic mean of topology precision and sensitivity."""
    from skimage.morphology import skeletonize

    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if valid is not None:
        pred, gt = pred & valid, gt & valid
    sp, sg = skeletonize(pred), skeletonize(gt)
    if not sp.any() and not sg.any():
        return 1.0
    tprec = (sp & gt).sum() / sp.sum() if sp.any() else 0.0
    tsens = (sg & pred).sum() / sg.sum() if sg.any() else 0.0
    return float(0.0 if tprec + tsens == 0 else 2 * tprec * tsens / (tprec + tsens))


class PRAccumulator:
    """Pooled precision-recall over many images via a fine probability histogram (exact up to bin width)."""

    def __init__(self, bins: int = 2000):
        self.bins = bins
        self.pos = np.zeros(bins, np.int64)
        self.neg = np.zeros(bins, np.int64)

    def add(self, prob, gt, valid=None):
        prob = np.asarray(prob, np.float32)
        gt = np.asarray(gt, bool)
        if valid is not None:
            prob, gt = prob[valid], gt[valid]
        idx = np.clip((prob * self.bins).astype(np.int64), 0, self.bins - 1).ravel()
        g = gt.ravel()
        self.pos += np.bincount(idx[g], minlength=self.bins)
        self.neg += np.bincount(idx[~g], minlength=self.bins)

    def aupr(self) -> float:
        """Average precision (area under the step PR curve, thresholds from high to low)."""
        tp = np.cumsum(self.pos[::-1])
        fp = np.cumsum(self.neg[::-1])
        P = tp[-1] if len(tp) else 0
        if P == 0:
            return float("nan")
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / P
        dr = np.diff(np.concatenate([[0.0], recall]))
        return float((precision * dr).sum())


def aupr(prob, gt, valid=None, bins: int = 2000) -> float:
    acc = PRAccumulator(bins)
    acc.add(prob, gt, valid)
    return acc.aupr()

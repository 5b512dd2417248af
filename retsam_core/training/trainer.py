"""Staged training (resumable) for the multi-task segmenter, locally or on Ray Train workers.

Stages (each writes `OUT/<stage>/ckpt.pt` every `ckpt_every_s` seconds and `OUT/<stage>/final.pt` + `done.json`
when finished; rerunning the same command resumes from the checkpoint and skips finished stages):

1. `experts`  : one model per task group (vessels, disc_cup, lesions), trained only on the datasets that label it.
2. `pseudo`   : the experts label the training images that lack their group's labels (confident pixels only;
                uncertain pixels are ignored); the pseudo-labels are used by `multitask` with `pseudo_weight`.
   `multitask`: one shared-encoder model on every dataset with the partial-label loss (+ pseudo-labels if present).
3. `finetune` : encoder frozen (weights and BatchNorm statistics), decoders fine-tuned on the curated labels only.

`init_weights` starts the first trained stage from released weights (their card fixes the architecture) instead of
from scratch or from the previous stage: stage 3 on its own adapts shipped weights to local annotations, and with
`train_groups` (e.g. only `vessels`) every other decoder stays bit-identical to the released one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import cv2
import torch

from retsam_core.datasets.readers import DATASETS
from retsam_core.model.network import RetSAMNet, TASK_GROUPS
from retsam_core.training.config import DATASET_GROUPS, STAGE_ORDER, StageConfig, TrainConfig
from retsam_core.training.data import PatchSampler, add_healthy_negatives, batch_stream, batch_to_float, load_records, records_summary
from retsam_core.training.distill import distillation_loss, distilled_channels, make_teacher
from retsam_core.training.losses import av_consistency, partial_label_loss
from retsam_core.training.pseudo import add_pseudo_labels, make_pseudo_labels


class Logger:
    def __init__(self, path: Path | None, main=True):
        self.path, self.main = path, main
        if path and main:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str):
        if not self.main:
            return
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}"
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def _pos_weights(cfg: TrainConfig, channels) -> torch.Tensor:
    lesion = set(TASK_GROUPS["lesions"])
    return torch.tensor([cfg.lesion_pos_weight if c in lesion else 1.0 for c in channels])


def _channel_weights(cfg: TrainConfig, channels) -> torch.Tensor:
    lesion = set(TASK_GROUPS["lesions"])
    return torch.tensor([cfg.lesion_channel_weight if c in lesion else 1.0 for c in channels])


def describe_hardware(dev: torch.device, threads: int, world: int = 1) -> str:
    """What trained a stage, for the model card (GPU name, or CPU threads), plus the torch build."""
    if dev.type == "cuda":
        what = f"{world} x {torch.cuda.get_device_name(dev)}"
    else:
        import platform

        what = f"{world} x {platform.processor() or platform.machine()} CPU, {threads} thread(s)"
    return f"{what}, torch {torch.__version__}"


def _training_device(cfg: TrainConfig) -> torch.device:
    return torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _save(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def frozen_parts(model: RetSAMNet, frozen_encoder: bool, frozen_decoders=()) -> list[torch.nn.Module]:
    """The modules a stage keeps as given: their weights get no gradient and their BatchNorm statistics stay fixed."""
    return ([model.encoder] if frozen_encoder else []) + [model.decoders[g] for g in frozen_decoders]


def set_train_mode(model: RetSAMNet, frozen: list[torch.nn.Module], batchnorm_fixed: bool = False):
    model.train()
    for part in frozen:
        part.eval()  # keep BatchNorm running statistics fixed
    if batchnorm_fixed:  # small CPU batches would otherwise pull statistics trained on large GPU batches
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def train_stage(cfg: TrainConfig, stage: str, sc: StageConfig, records, out: Path, *, channel_filter=None,
                init_state=None, frozen_encoder=False, frozen_decoders=(), log=None, wrap_model=None, is_main=True, report=None,
                rank=0, world=1) -> dict:
    """Train one stage to `sc.steps` (or `sc.max_minutes`), resuming from `out/ckpt.pt`. Returns the final state."""
    log = log or Logger(out / "train.log", is_main)
    done = out / "done.json"
    if done.exists():
        log(f"[{stage}] already done: {json.loads(done.read_text())}")
        return torch.load(out / "final.pt", map_location="cpu", weights_only=False)["model"]
    torch.manual_seed(cfg.seed + rank)
    model = RetSAMNet(cfg.model)
    if init_state is not None:
        model.load_state_dict(init_state)
    distil = bool(cfg.distill_groups) and init_state is not None and not frozen_encoder
    if channel_filter is not None and not distil:  # an image none of whose labels is trained here would only cost time
        records = [r for r in records if set(r.labels) & set(channel_filter)]
    sampler = PatchSampler(records, model.channels, sc.patch, sc.batch, cfg.aug, seed=cfg.seed + 1000 * rank + int(time.time()) % 1000,
                           dataset_weights=cfg.dataset_weights, pseudo_weight=cfg.pseudo_weight, channel_filter=channel_filter)
    used = sampler.annotated_channels()
    model.skip_groups = {g for g, ch in cfg.model.task_groups.items() if not (set(ch) & used)} - set(cfg.distill_groups if distil else ())
    frozen = frozen_parts(model, frozen_encoder, frozen_decoders)
    for part in frozen:
        part.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=sc.lr, weight_decay=sc.weight_decay)
    warm = max(1, min(50, sc.steps // 20))
    budget_s = sc.max_minutes * 60 if sc.max_minutes else None
    progress = {"p": 0.0}  # schedule progress in [0, 1]: max(step / steps, elapsed / time budget)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress["p"])))))
    step, elapsed, hist = 0, 0.0, []
    ck = out / "ckpt.pt"
    if ck.exists():
        st = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step, elapsed, hist = st["step"], st["elapsed"], st.get("hist", [])
        log(f"[{stage}] resumed from {ck} at step {step} ({elapsed / 60:.1f} min done); config now: "
            f"dataset_weights={cfg.dataset_weights} lesion_pos_weight={cfg.lesion_pos_weight} av_weight={cfg.av_weight}")
    else:
        log(f"[{stage}] start: {sc} data={records_summary(records)} channels={sorted(used)} skip={sorted(model.skip_groups)}"
            f" frozen_encoder={frozen_encoder} frozen_decoders={list(frozen_decoders)} distilled={list(cfg.distill_groups) if distil else []}"
            f" world={world} aug={sampler.aug}")
    if wrap_model is None:
        model.to(_training_device(cfg))
        net = model
    else:
        net = wrap_model(model)  # Ray Train: DDP + the worker's device
    dev = next(model.parameters()).device
    for st in opt.state.values():  # a resumed optimizer's state was loaded on the CPU, beside the CPU model
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(dev)
    if cfg.device_sampler:  # patches cut on the training device (grid_sample); the CPU only draws random numbers
        from retsam_core.training.device_sampler import DevicePatchSampler

        batches = iter(DevicePatchSampler(sampler, dev).next_batch, None)
    else:
        batches = batch_stream(sampler, cfg.loader_workers)
    use_amp = (cfg.amp and dev.type == "cuda") or (cfg.cpu_amp and dev.type == "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cw = _channel_weights(cfg, model.channels).to(dev)
    pw = _pos_weights(cfg, model.channels).to(dev) if cfg.lesion_pos_weight != 1.0 else None
    vi = model.channels.index("vessel") if "vessel" in model.channels else None
    teacher = make_teacher(cfg.model, init_state, dev, cfg.distill_groups) if distil else None
    kept = distilled_channels(cfg.model, cfg.distill_groups) if distil else []
    t_last_ck, t0 = time.time(), time.time() - elapsed
    run_loss, run_n = 0.0, 0
    def keep_going() -> bool:
        go = step < sc.steps and (budget_s is None or time.time() - t0 < budget_s)
        if world > 1 and budget_s is not None:  # ranks must agree on when the time budget ends (DDP)
            import torch.distributed as dist

            flag = torch.tensor([0 if go else 1])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            go = not bool(flag.item())
        return go

    while keep_going():
        set_train_mode(model, frozen, cfg.batchnorm_statistics_fixed)
        x, y, w, ann, _ = (t.to(dev, non_blocking=True) if torch.is_tensor(t) else t for t in next(batches))
        x, y, w = batch_to_float(x, y, w)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            out_d = net(x)
        logits = out_d["seg"].float()
        loss, per = partial_label_loss(logits, y, w, ann, channel_weights=cw, pos_weight=pw)
        if cfg.av_weight > 0 and vi is not None and "vessels" not in model.skip_groups:
            loss = loss + cfg.av_weight * av_consistency(logits, vi, vi + 1, vi + 2)
        if teacher is not None:
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                held = teacher(x)["seg"]
            held_loss = distillation_loss(logits, held, kept, cfg.distill_positive_weight)
            loss = loss + cfg.distill_weight * held_loss
            per[-1] = held_loss.detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        step += 1
        progress["p"] = max(step / sc.steps, (time.time() - t0) / budget_s if budget_s else 0.0)
        sched.step()
        run_loss += loss.detach()  # a tensor: no host sync per step
        run_n += 1
        if step % cfg.log_every == 0 or step == sc.steps:
            el = time.time() - t0
            avg = float(run_loss) / run_n
            hist.append([step, round(el, 1), round(avg, 5)])
            chl = " ".join(f"{model.channels[c] if c >= 0 else 'distil'}={float(v):.3f}" for c, v in sorted(per.items()))
            log(f"[{stage}] step {step}/{sc.steps} loss {avg:.4f} lr {sched.get_last_lr()[0]:.2e} {el / 60:.1f}min | last: {chl}")
            if report:
                report({"stage": stage, "step": step, "loss": avg})
            run_loss, run_n = 0.0, 0
        if is_main and time.time() - t_last_ck > cfg.ckpt_every_s:
            _save(ck, {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
                       "elapsed": time.time() - t0, "hist": hist})
            t_last_ck = time.time()
    elapsed = time.time() - t0
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if is_main:
        _save(ck, {"model": state, "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "elapsed": elapsed, "hist": hist})
        _save(out / "final.pt", {"model": state, "config": cfg.to_dict(), "stage": stage})
        info = {"stage": stage, "steps": step, "planned_steps": sc.steps, "minutes": round(elapsed / 60, 2),
                "final_loss": hist[-1][2] if hist else None, "first_loss": hist[0][2] if hist else None,
                "channels": sorted(used), "data": records_summary(records), "frozen_encoder": frozen_encoder,
                "frozen_decoders": list(frozen_decoders), "distilled": list(cfg.distill_groups) if distil else [],
                "distill_weight": cfg.distill_weight if distil else None,
                "distill_positive_weight": cfg.distill_positive_weight if distil else None,
                "world_size": world, "patch": sc.patch, "batch": sc.batch, "lr": sc.lr,
                "hardware": describe_hardware(dev, cfg.threads, world), "bf16": use_amp}
        done.write_text(json.dumps(info, indent=1))
        log(f"[{stage}] done: {info}")
    return state


def initial_state(cfg: TrainConfig) -> dict | None:
    """The released weights named by `cfg.init_weights` (hash-checked), adopting their card's architecture. A
    `model.vessel_refiner` the config asks for and the weights lack is added, starting as the identity."""
    if not cfg.init_weights:
        return None
    from retsam_core.model.loading import load_model

    model, _ = load_model(cfg.init_weights)
    if cfg.model.vessel_refiner and not model.cfg.vessel_refiner:
        grown = RetSAMNet(replace(model.cfg, vessel_refiner=cfg.model.vessel_refiner))
        missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
        if unexpected or not all(k.startswith("vessel_refiner.") for k in missing):
            raise ValueError(f"{cfg.init_weights} does not fit a refiner-grown network: missing={missing[:5]} unexpected={unexpected[:5]}")
        model = grown
    cfg.model = model.cfg
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_channels(cfg: TrainConfig) -> list[str] | None:
    """The channel filter of the multitask and finetune stages: the channels of `cfg.train_groups` (None: all)."""
    if cfg.train_groups is None:
        return None
    unknown = [g for g in cfg.train_groups if g not in cfg.model.task_groups]
    if unknown:
        raise ValueError(f"unknown task group(s) {unknown}; groups: {', '.join(cfg.model.task_groups)}")
    return [c for g in cfg.train_groups for c in cfg.model.task_groups[g]]


def training_records(cfg: TrainConfig) -> tuple[list, dict[str, int]]:
    """The training split of every configured dataset, each at the canvas side the model wants for its camera (one
    side for a fixed-size model; px per degree x field angle for an angular-scale one, cut from the originals, not
    resampled from another canvas). -> (records, {dataset: side})."""
    sides = {d: cfg.model.canvas_side(DATASETS[d].field_angle_deg if d in DATASETS else None) for d in cfg.datasets}
    records = []
    for d in cfg.datasets:
        records += load_records(cfg.cache_dir, [d], "train", sides[d], root=cfg.data_root, limit=cfg.limit_images,
                                bundle_dir=cfg.bundle_dir, standardise=cfg.model.standardise_input,
                                cache_size=max(sides[d], 1024))
    return records, sides


def run_training(cfg: TrainConfig, *, wrap_model=None, is_main=True, report=None, rank=0, world=1) -> Path:
    """Run the configured stages in order (resuming). Returns the path of the last stage's final.pt."""
    state = initial_state(cfg)
    only = trained_channels(cfg)  # checked before the records are loaded
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(cfg.threads)
    out = Path(cfg.out_dir)
    log = Logger(out / "train.log", is_main)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    records, sides = training_records(cfg)
    res = "/".join(f"{d} {s}" for d, s in sides.items()) if cfg.model.px_per_degree else cfg.model.resolution
    if cfg.healthy_negatives:
        lesions = [c for c in cfg.model.task_groups.get("lesions", ())
                   if any(c in DATASETS[d].annotated for d in cfg.datasets if d in DATASETS)]
        log(f"healthy eyes: {add_healthy_negatives(records, lesions, cfg.hold_out_calibration_eyes)} all-background lesion labels ({', '.join(lesions)})")
    log(f"loaded {len(records)} training records at {res}px{' (intensity standardised)' if cfg.model.standardise_input else ''}: "
        f"{records_summary(records)}")
    last = None
    experts = {}
    for stage in STAGE_ORDER:
        if stage not in cfg.stages:
            continue
        if stage == "experts":
            for group in ("vessels", "disc_cup", "lesions"):
                recs = [r for r in records if group in DATASET_GROUPS.get(r.dataset, ())]
                if not recs:
                    continue
                experts[group] = train_stage(cfg, f"experts/{group}", cfg.experts, recs, out / "experts" / group,
                                             channel_filter=cfg.model.task_groups[group], log=log, wrap_model=wrap_model,
                                             is_main=is_main, report=report, rank=rank, world=world)
                last = out / "experts" / group / "final.pt"
        elif stage == "pseudo":
            done = out / "pseudo" / "done.json"
            if not done.exists():
                if not experts:
                    for g in ("vessels", "disc_cup", "lesions"):
                        p = out / "experts" / g / "final.pt"
                        if p.exists():
                            experts[g] = torch.load(p, map_location="cpu", weights_only=False)["model"]
                if is_main:
                    n = make_pseudo_labels(cfg, experts, records, out / "pseudo", _training_device(cfg), log)
                    done.write_text(json.dumps({"pairs": n, "experts": sorted(experts)}))
            n = add_pseudo_labels(records, out / "pseudo")
            log(f"[pseudo] attached {n} pseudo-label channels")
        elif stage == "multitask":
            if not (out / "pseudo" / "done.json").exists() or not any(r.pseudo for r in records):
                add_pseudo_labels(records, out / "pseudo")
            state = train_stage(cfg, "multitask", cfg.multitask, records, out / "multitask", init_state=state,
                                channel_filter=only, frozen_decoders=cfg.frozen_decoders, log=log, wrap_model=wrap_model,
                                is_main=is_main, report=report, rank=rank, world=world)
            last = out / "multitask" / "final.pt"
        elif stage == "finetune":
            if state is None:
                src = out / "multitask" / "final.pt"
                if not src.exists():
                    raise FileNotFoundError(f"finetune needs {src} (run the multitask stage first)")
                state = torch.load(src, map_location="cpu", weights_only=False)["model"]
            curated = [r for r in records]
            for r in curated:  # curated labels only in the adaptation stage
                for c in list(r.pseudo):
                    r.labels.pop(c, None)
                    r.ignore.pop(c, None)
                r.pseudo.clear()
            state = train_stage(cfg, "finetune", cfg.finetune, curated, out / "finetune", init_state=state,
                                channel_filter=only, frozen_encoder=True, frozen_decoders=cfg.frozen_decoders, log=log, wrap_model=wrap_model, is_main=is_main, report=report,
                                rank=rank, world=world)
            last = out / "finetune" / "final.pt"
    return last

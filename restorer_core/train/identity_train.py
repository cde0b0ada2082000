"""Train the IdentityEmbedder on the face cache's TRAIN identities with a CosFace/ArcFace margin.

Resumable in time-boxed chunks (the lent GPU runs at most ~9 minutes per call): every run
continues from ``<out>/checkpoint.pt`` if present, trains for ``--minutes``, evaluates face
verification on the VAL identities (people never seen in training), saves the checkpoint and
exports ``<out>/identity_embedder.safetensors`` (fp16, config + threshold + metrics in its
metadata). The learning-rate schedule follows total training time (``--total-minutes``) or
total steps (``--total-steps``), so chunks add up to one schedule.

All crops are decoded once and kept as uint8 tensors on the device; a degraded copy of each is
made once per run on CPU threads (restorer_core.train.degrade), and flips, small affine jitter
and colour jitter run on the device per batch.

    python -m restorer_core.train.identity_train --data .traindata/faces128.npz \
        --out runs/identity --minutes 4 --total-minutes 12
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io.atomic import atomic_path
from ..faces.identity import IdentityConfig, IdentityEmbedder, embedder_metadata
from .dataset import FaceCache
from .degrade import DegradationConfig, degrade, degrade_fixed

CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_NAME = "identity_embedder.safetensors"
DATA_NOTE = ("Trained on aligned faces of a CelebA identity subset and LFW (research use only; "
             "CelebA: non-commercial research, no redistribution of the images).")


@dataclass(frozen=True)
class IdentityTrainConfig:
    data: str
    out: str
    minutes: float = 4.0  # budget of this run
    total_minutes: Optional[float] = None  # whole schedule in training time (default: minutes)
    total_steps: Optional[int] = None  # or: whole schedule in steps (wins over total_minutes)
    max_steps: Optional[int] = None  # stop this run after this many steps (smoke tests)
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: float = 0.03  # fraction of the schedule
    loss: str = "cosface"  # "cosface" | "arcface"
    margin: float = 0.35  # cosface: cosine margin; arcface: angular margin (radians), e.g. 0.4
    scale: float = 32.0
    lq_prob: float = 0.35  # share of samples drawn from the degraded copy
    eval_every_s: float = 60.0
    seed: int = 0
    device: str = "auto"
    model: IdentityConfig = field(default_factory=IdentityConfig)
    num_threads: int = 0  # CPU threads for degradation; 0 = all cores


# ----------------------------------------------------------------------------- margin head


class MarginHead(nn.Module):
    """Normalised class centres; logits = scale * margin-adjusted cosine (CosFace or ArcFace)."""

    def __init__(self, dim: int, classes: int, loss: str = "cosface", margin: float = 0.35, scale: float = 32.0):
        super().__init__()
        if loss not in ("cosface", "arcface"):
            raise ValueError(f"loss must be 'cosface' or 'arcface', got {loss!r}")
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.loss, self.margin, self.scale = loss, float(margin), float(scale)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(emb)
        target = cos.gather(1, labels[:, None])
        if self.loss == "cosface":
            adjusted = target - self.margin
        else:  # ArcFace cos(theta + m), falling back to a linear penalty past theta = pi - m
            sin = (1.0 - target.pow(2)).clamp_min(1e-7).sqrt()
            phi = target * math.cos(self.margin) - sin * math.sin(self.margin)
            adjusted = torch.where(target > math.cos(math.pi - self.margin), phi,
                                   target - math.sin(math.pi - self.margin) * self.margin)
        logits = cos.scatter(1, labels[:, None], adjusted) * self.scale
        return F.cross_entropy(logits, labels)


# ----------------------------------------------------------------------------- augmentation


def augment(batch_u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 [B, S, S, 3] on any device -> float [B, 3, S, S] 0..1 with flip, affine and colour jitter."""
    x = batch_u8.permute(0, 3, 1, 2).float().div_(255.0)
    b, dev = x.shape[0], x.device

    def u(lo: float, hi: float, shape=(b,)) -> torch.Tensor:
        return torch.rand(shape, generator=gen, device=dev) * (hi - lo) + lo

    flip = torch.rand(b, generator=gen, device=dev) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    ang, scl = u(-0.14, 0.14), u(0.92, 1.08)  # +-8 degrees, +-8 % zoom
    tx, ty = u(-0.06, 0.06), u(-0.06, 0.06)
    cos, sin = torch.cos(ang) / scl, torch.sin(ang) / scl
    theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gray = (x * torch.tensor([0.299, 0.587, 0.114], device=dev)[:, None, None]).sum(1, keepdim=True)
    sat = torch.where(torch.rand(b, generator=gen, device=dev) < 0.15, torch.zeros(b, device=dev), u(0.6, 1.4))
    x = gray + (x - gray) * sat[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.7, 1.3)[:, None, None, None] + mean
    x = x * u(0.7, 1.3)[:, None, None, None]
    return x.clamp_(0.0, 1.0)


def degraded_copies(images: np.ndarray, seed: int, threads: int) -> np.ndarray:
    """One mild random degradation (x1.5..x8, restorer_core.train.degrade) of every crop, on CPU threads."""
    cfg = DegradationConfig(scale=(1.5, 8.0), shuffle_prob=0.1)
    out = np.empty_like(images)

    def work(i: int) -> None:
        out[i] = degrade(images[i], np.random.default_rng([seed, i]), cfg)

    with ThreadPoolExecutor(max_workers=max(1, threads or (os.cpu_count() or 1))) as ex:
        list(ex.map(work, range(len(images)), chunksize=64))
    return out


# ----------------------------------------------------------------------------- evaluation


def verification_metrics(emb: np.ndarray, labels: np.ndarray, probe: Optional[np.ndarray] = None) -> dict:
    """Pairwise verification over all pairs i != j: ROC AUC, equal error rate, best balanced accuracy
    ((TPR + TNR) / 2) and its similarity threshold (the "same person" cut for users), TAR at FAR 1e-2 / 1e-3.

    probe: optional second set of embeddings of the same crops (e.g. degraded); pairs then
    compare probe[i] with emb[j].
    """
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    p = emb if probe is None else probe / np.linalg.norm(probe, axis=1, keepdims=True)
    sim = p @ emb.T
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    if probe is None:
        off &= np.triu(np.ones_like(off), 1)
    pos, neg = sim[same & off], sim[~same & off]
    if len(pos) == 0 or len(neg) == 0:
        return {"pairs_pos": int(len(pos)), "pairs_neg": int(len(neg))}
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_pos[order]) / len(pos)
    fp = np.cumsum(~is_pos[order]) / len(neg)
    tp0, fp0 = np.concatenate([[0.0], tp]), np.concatenate([[0.0], fp])
    auc = float(np.sum(np.diff(fp0) * (tp0[1:] + tp0[:-1]) / 2.0))
    balanced = (tp + 1.0 - fp) / 2.0  # pairs are ~10x more often negative: plain accuracy would reward "never"
    best = int(np.argmax(balanced))
    eer_k = int(np.argmin(np.abs(fp - (1.0 - tp))))

    def tar_at(far: float) -> float:
        k = np.searchsorted(fp, far, side="right") - 1
        return float(tp[k]) if k >= 0 else 0.0

    return {"auc": round(auc, 4), "balanced_acc": round(float(balanced[best]), 4),
            "threshold": round(float(scores[order][best]), 4), "eer": round(float((fp[eer_k] + 1.0 - tp[eer_k]) / 2.0), 4),
            "tar@far1e-2": round(tar_at(1e-2), 4), "tar@far1e-3": round(tar_at(1e-3), 4),
            "pos_mean": round(float(pos.mean()), 4), "neg_mean": round(float(neg.mean()), 4),
            "pairs_pos": int(len(pos)), "pairs_neg": int(len(neg))}


@torch.no_grad()
def embed_tensor(model: IdentityEmbedder, images_u8: torch.Tensor, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch):
        x = images_u8[i:i + batch].permute(0, 3, 1, 2).float().div_(255.0)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out)


# ----------------------------------------------------------------------------- io


def _atomic_save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def export_embedder(model: IdentityEmbedder, path: Path, extra: dict) -> None:
    """fp16 safetensors of the embedder (metadata: format, config, and ``extra``), written atomically."""
    from safetensors.torch import save_file

    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=embedder_metadata(model, extra))


def _logger(out: Path) -> logging.Logger:
    log = logging.getLogger(f"identity_train.{out}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
        for h in (logging.FileHandler(out / "train.log"), logging.StreamHandler()):
            h.setFormatter(fmt)
            log.addHandler(h)
    return log


def _cache_digest(cache: FaceCache) -> str:
    h = hashlib.sha256()
    h.update(cache.offsets.tobytes())
    h.update(cache.identity.tobytes())
    h.update(cache.split.tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- training


def _lr_factor(progress: float, warmup: float) -> float:
    if progress < warmup:
        return max(progress / max(warmup, 1e-8), 0.01)
    t = min(1.0, (progress - warmup) / max(1.0 - warmup, 1e-8))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


def _param_groups(modules: Sequence[nn.Module], wd: float) -> list[dict]:
    decay, no_decay = [], []
    for m in modules:
        for p in m.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def train(cfg: IdentityTrainConfig) -> dict:
    """Run one time-boxed chunk; return a summary (step, progress, metrics, paths)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = _logger(out)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    use_amp = device.type == "cuda"
    if use_amp:
        torch.backends.cudnn.benchmark = True
    t_start = time.time()

    cache = FaceCache.load(cfg.data)
    train_idx, val_idx = cache.indices("train"), cache.indices("val")
    train_ids = np.unique(cache.identity[train_idx])
    remap = {int(c): i for i, c in enumerate(train_ids)}
    labels_np = np.array([remap[int(c)] for c in cache.identity[train_idx]], np.int64)
    log.info(f"data {cfg.data}: {len(train_idx)} train crops / {len(train_ids)} people, "
             f"{len(val_idx)} val crops / {len(np.unique(cache.identity[val_idx]))} people; device {device}")

    threads = max(1, cfg.num_threads or (os.cpu_count() or 1))
    clean_np = cache.images(train_idx, threads)
    lq_np = degraded_copies(clean_np, cfg.seed, cfg.num_threads)
    clean = torch.from_numpy(clean_np).to(device)
    lq = torch.from_numpy(lq_np).to(device)
    labels = torch.from_numpy(labels_np).to(device)
    val_clean_np = cache.images(val_idx, threads)
    val_lq_np = np.stack([degrade_fixed(im, 4, int(i)) for im, i in zip(val_clean_np, val_idx)]) if len(val_idx) else val_clean_np
    val_labels = cache.identity[val_idx]
    log.info(f"decoded and degraded in {time.time() - t_start:.1f}s")

    id_cfg = cfg.model
    model = IdentityEmbedder(id_cfg).to(device)
    head = MarginHead(id_cfg.embedding_dim, len(train_ids), cfg.loss, cfg.margin, cfg.scale).to(device)
    opt = torch.optim.AdamW(_param_groups([model, head], cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    digest = _cache_digest(cache)
    step, elapsed, history = 0, 0.0, []
    ckpt_path = out / CHECKPOINT_NAME
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ck["data_digest"] != digest or IdentityConfig.from_dict(json.loads(ck["identity_config"])) != id_cfg:
            raise ValueError(f"{ckpt_path} was trained on another cache or architecture; use a new --out folder")
        model.load_state_dict(ck["model"])
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["optimizer"])
        step, elapsed = int(ck["step"]), float(ck["elapsed"])
        history = json.loads(ck["history"])
        log.info(f"resumed from {ckpt_path} at step {step}, {elapsed / 60:.2f} min trained")

    total_s = 60.0 * (cfg.total_minutes if cfg.total_minutes else cfg.minutes)

    def progress() -> float:
        if cfg.total_steps:
            return step / cfg.total_steps
        return elapsed / total_s

    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 1_000_003 + step)
    budget = 60.0 * cfg.minutes
    run_start = time.time()
    last_eval = time.time()
    steps_this_run = 0
    loss_ema = None
    metrics: dict = {}

    def evaluate() -> dict:
        if len(val_idx) < 2:
            return {}
        emb = embed_tensor(model, torch.from_numpy(val_clean_np).to(device))
        emb_lq = embed_tensor(model, torch.from_numpy(val_lq_np).to(device))
        m = {"clean": verification_metrics(emb, val_labels), "lq_x4_vs_clean": verification_metrics(emb, val_labels, probe=emb_lq)}
        model.train()
        return m

    def save(final: bool) -> None:
        ck = {"model": model.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
              "step": step, "elapsed": elapsed, "data_digest": digest,
              "identity_config": json.dumps(id_cfg.to_dict()), "history": json.dumps(history)}
        _atomic_save(ck, ckpt_path)
        threshold = metrics.get("clean", {}).get("threshold")
        export_embedder(model, out / EXPORT_NAME, {
            "threshold": "" if threshold is None else str(threshold), "metrics": metrics, "step": str(step),
            "train_minutes": f"{elapsed / 60:.2f}", "final": "true" if final else "false", "data": DATA_NOTE,
            "loss": f"{cfg.loss} m={cfg.margin} s={cfg.scale}",
        })

    model.train()
    n = len(train_idx)
    while progress() < 1.0:
        if time.time() - run_start >= budget or (cfg.max_steps is not None and steps_this_run >= cfg.max_steps):
            break
        t0 = time.time()
        lr = cfg.lr * _lr_factor(progress(), cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen, device=device)
        use_lq = torch.rand(len(idx), generator=gen, device=device) < cfg.lq_prob
        src = torch.where(use_lq[:, None, None, None], lq[idx], clean[idx])
        x = augment(src, gen)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            emb = model.features_raw(x)
        loss = head(emb.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 5.0)
        opt.step()
        if device.type == "cuda" and step % 50 == 0:
            torch.cuda.synchronize()
        step += 1
        steps_this_run += 1
        elapsed += time.time() - t0
        lv = float(loss.detach()) if step % 25 == 0 or steps_this_run <= 2 else None
        if lv is not None:
            loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
            log.info(f"step {step} loss {lv:.4f} ema {loss_ema:.4f} lr {lr:.2e} progress {progress():.3f}")
        if time.time() - last_eval >= cfg.eval_every_s:
            metrics = evaluate()
            history.append({"step": step, "minutes": round(elapsed / 60, 2), **metrics})
            log.info(f"eval step {step}: {json.dumps(metrics)}")
            save(final=False)
            last_eval = time.time()

    done = progress() >= 1.0
    metrics = evaluate()
    history.append({"step": step, "minutes": round(elapsed / 60, 2), **metrics})
    log.info(f"eval step {step}: {json.dumps(metrics)}")
    save(final=done)
    summary = {"step": step, "steps_this_run": steps_this_run, "progress": round(progress(), 4), "done": done,
               "train_minutes": round(elapsed / 60, 2), "wall_s": round(time.time() - t_start, 1),
               "metrics": metrics, "checkpoint": str(ckpt_path), "export": str(out / EXPORT_NAME)}
    log.info(f"summary {json.dumps(summary)}")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Train the identity embedder (resumable, time-boxed).")
    d = IdentityTrainConfig(data="", out="")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=d.minutes, help="training budget of this run")
    ap.add_argument("--total-minutes", type=float, default=None, help="length of the whole schedule (default --minutes)")
    ap.add_argument("--total-steps", type=int, default=None, help="schedule by steps instead of time")
    ap.add_argument("--max-steps", type=int, default=None, help="stop this run after N steps")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--loss", choices=("cosface", "arcface"), default=d.loss)
    ap.add_argument("--margin", type=float, default=d.margin)
    ap.add_argument("--scale", type=float, default=d.scale)
    ap.add_argument("--eval-every", type=float, default=d.eval_every_s, help="seconds between evaluations")
    ap.add_argument("--embedding-dim", type=int, default=d.model.embedding_dim)
    ap.add_argument("--input-size", type=int, default=d.model.input_size)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--seed", type=int, default=d.seed)
    a = ap.parse_args(argv)
    cfg = replace(d, data=a.data, out=a.out, minutes=a.minutes, total_minutes=a.total_minutes, total_steps=a.total_steps,
                  max_steps=a.max_steps, batch_size=a.batch_size, lr=a.lr, loss=a.loss, margin=a.margin, scale=a.scale,
                  eval_every_s=a.eval_every, model=replace(d.model, embedding_dim=a.embedding_dim, input_size=a.input_size),
                  device=a.device, seed=a.seed)
    summary = train(cfg)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

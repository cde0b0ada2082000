"""Train the small embedded restorer (or any RestorerConfig) on identity folders, in resumable chunks.

    python -m restorer_core.train.train_restorer --data .traindata/faces128.npz --out runs/restorer \
        --minutes 8 [--identity runs/identity/identity_embedder.safetensors]

Each call trains for at most --minutes, checkpoints every --checkpoint-minutes and at the end
(atomically, tensors only: resumable with torch.load(weights_only=True)), and resumes from the
checkpoint in --out when there is one. Under torchrun (WORLD_SIZE > 1) the same command trains
data-parallel on every GPU of the host. Mixed precision (bf16 autocast) on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..io.atomic import atomic_path
from ..loaders.project_format import save_restorer
from ..models.config import RestorerConfig, small_default_config
from ..models.restorer import OneStepRestorer
from .dataset import FaceCache, RestorationDataset, TrainDataConfig, ValidationDataset, build_validation_set
from .degrade import DegradationConfig
from .gan import MultiScaleDiscriminator, d_hinge_loss, feature_matching_loss, g_hinge_loss
from .losses import IdentityLoss, IdentityLossConfig, landmark_attention_loss, ssim, ssim_loss


@dataclass
class LossWeights:
    l1: float = 1.0
    ssim: float = 0.5
    identity: float = 1.0  # 1 - cos of the face-ID embeddings of the output and the target
    identity_features: float = 0.0  # face-perceptual: the face-ID network's stage activations
    landmark: float = 0.1
    vq: float = 0.25
    adversarial: float = 0.05  # generator hinge loss against the patch discriminator
    feature_matching: float = 0.5  # L1 between the discriminator's features of output and target


@dataclass
class TrainConfig:
    data: str
    out: str
    minutes: float = 8.0
    checkpoint_minutes: float = 3.0
    batch_size: int = 32
    lr: float = 3e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 300
    total_steps: int = 15000  # horizon of the cosine schedule (resume-safe: depends on global step)
    ema_decay: float = 0.999
    num_workers: int = 8
    constant_prompt_prob: float = 0.15  # also train the reference-only mode (constant prompt)
    val_every: int = 1000
    val_samples: int = 96
    seed: int = 0
    identity_weights: Optional[str] = None  # None: the restorer's own face-ID network (or the shipped one)
    # a converted face-ID network file (restorer_core.face_id.convert) for the identity loss and the
    # validation identity metric, instead of the reference channel's own network (which stays as is)
    identity_loss_network: Optional[str] = None
    face_id_network: str = "identity_embedder"  # identity loss and reference-identity channel
    mixed_precision: str = "bf16"
    resolution: int = 128
    log_every: int = 50
    init: Optional[str] = None  # a project-format restorer to start from (new parts start fresh)
    # a discriminator.safetensors of an earlier run to start the adversarial term from (a fresh
    # discriminator starts at chance and needs thousands of steps before its signal is useful)
    init_discriminator: Optional[str] = None
    ref_id_tokens: int = 4  # reference-identity channel width (0: no channel)
    identity_views: int = 1  # identity loss averaged over this many shifted/zoomed/mirrored views
    d_lr: float = 2e-4
    gan_warmup_steps: int = 300  # adversarial weights ramp from 0 over these steps
    clean_prob: float = 0.08
    wrong_ref_prob: float = 0.1
    min_scale: float = 3.0  # training downsampling range, log-uniform (severe degradations)
    max_scale: float = 16.0
    weights: LossWeights = field(default_factory=LossWeights)


def _all_ranks_agree(stop: bool, world: int, device: torch.device) -> bool:
    """Stop when any rank's clock says so, on every rank at the same step (else DDP would hang)."""
    if world == 1:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def _worker_init(_: int) -> None:
    """One thread per data worker: OpenCV/torch pools in every worker oversubscribe the CPUs."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- distributed helpers
def setup_distributed() -> tuple:
    """(rank, world_size, device) from torchrun's environment, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return rank, world, device
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TrainStep(nn.Module):
    """One forward of the training objective, so DDP sees every parameter through `forward`."""

    def __init__(self, model: OneStepRestorer, identity: Optional[IdentityLoss], cfg: TrainConfig,
                 discriminator: Optional[nn.Module] = None):
        super().__init__()
        self.model = model
        self.identity = identity
        self.cfg = cfg
        # not a submodule: its parameters belong to the discriminator's own optimiser (and DDP)
        self._disc = [discriminator]

    def forward(self, batch: dict, use_constant_prompt: bool, gan_scale: float = 1.0) -> dict:
        m, w = self.model, self.cfg.weights
        hq, lq = batch["hq"], batch["lq"]
        has_refs = bool(batch["ref_mask"].any())
        refs = m.encode_references(batch["refs"], batch["ref_mask"]) if has_refs else None
        x = lq * 2 - 1
        vq_loss = hq.new_zeros(())
        if m.vre is not None and not use_constant_prompt:
            context, vq_loss = m.vre.forward_train(x)
            mode = "both" if has_refs else "visual_prompt"
        else:
            context = m.prompt(x, False)
            mode = "references" if has_refs else "none"

        queries, keys = [], []
        if has_refs and w.landmark > 0:
            m._ctx.probe = lambda layer, q, k, scale, n: (queries.append(q), keys.append(k))
        try:
            out = m(lq, refs, mode=mode, context=context)
        finally:
            m._ctx.probe = None
        # Losses in float32 outside autocast: SSIM's variance terms (E[x^2] - E[x]^2) and the
        # attention log-masses lose everything to cancellation in bf16 (seen: NaN at step 2).
        with torch.autocast(out.device.type, enabled=False):
            out, hq = out.float(), hq.float()
            losses = {"l1": F.l1_loss(out, hq), "ssim": ssim_loss(out, hq), "vq": vq_loss.float()}
            if self.identity is not None:
                losses.update(self.identity.terms(out, hq))
            if queries:
                losses["landmark"] = landmark_attention_loss(
                    [q.float() for q in queries], [k.float() for k in keys], batch["landmarks"],
                    batch["ref_landmarks"], batch["ref_mask"], hq.shape[-1])
            disc = self._disc[0]
            if disc is not None and gan_scale > 0:
                fake, real = disc(out), disc(hq)
                losses["adversarial"] = g_hinge_loss(fake) * gan_scale
                losses["feature_matching"] = feature_matching_loss(real, fake) * gan_scale
            total = sum(getattr(w, k) * v for k, v in losses.items())
        losses["total"] = total
        losses["restored"] = out.detach()
        return losses


# --------------------------------------------------------------------------- checkpoints
def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


DISCRIMINATOR_FILE = "discriminator.safetensors"


def save_discriminator(disc: nn.Module, path: Path) -> None:
    """The discriminator's weights in float16 (small enough to come back from a GPU machine), so a
    later run can continue the adversarial term (TrainConfig.init_discriminator)."""
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in disc.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "onestep-face-restore/discriminator-1"})


def load_discriminator(disc: nn.Module, path: str) -> None:
    """Load weights written by save_discriminator; ValueError saying why when they do not fit."""
    tensors = load_file(path)
    own = disc.state_dict()
    if set(tensors) != set(own) or any(tensors[k].shape != own[k].shape for k in own):
        raise ValueError(f"{path} does not hold this discriminator's weights (MultiScaleDiscriminator with "
                         "the default config); start without --init-discriminator")
    disc.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def evaluate(model: OneStepRestorer, vset, device, n: int, identity: Optional[nn.Module] = None) -> dict:
    """PSNR/SSIM on the fixed validation set at x4 and x8: with 4 references, without, and with
    another validation person's 4 references; plus the face-ID cosine to the target when an
    identity network is given (how much the references move identity)."""
    model.eval()
    out = {}
    for scale in (4, 8):
        ds = ValidationDataset(vset, scale)
        idx = list(range(min(n, len(ds))))
        batch = torch.utils.data.default_collate([ds[i] for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        refs = model.encode_references(batch["refs"], batch["ref_mask"])
        wrong = model.encode_references(batch["refs"].roll(1, 0), batch["ref_mask"].roll(1, 0))
        e_t = identity(batch["hq"]).float() if identity is not None else None
        for name, kv in (("refs4", refs), ("norefs", None), ("wrongrefs", wrong)):
            pred = model(batch["lq"], kv, mode="auto").float()
            mse = ((pred - batch["hq"]) ** 2).flatten(1).mean(1).clamp(min=1e-10)
            out[f"x{scale}_{name}_psnr"] = float((10 * torch.log10(1 / mse)).mean())
            out[f"x{scale}_{name}_ssim"] = float(ssim(pred, batch["hq"]).mean())
            if e_t is not None:
                out[f"x{scale}_{name}_id"] = float((identity(pred).float() * e_t).sum(-1).mean())
        out[f"x{scale}_lq_psnr"] = float((10 * torch.log10(1 / ((batch["lq"] - batch["hq"]) ** 2)
                                                            .flatten(1).mean(1))).mean())
        if e_t is not None:
            out[f"x{scale}_lq_id"] = float((identity(batch["lq"]).float() * e_t).sum(-1).mean())
    model.train()
    return out


def build_model(cfg: TrainConfig, device) -> OneStepRestorer:
    """The restorer to train: the small default architecture (+ the reference-identity channel),
    started from ``cfg.init`` when given (parts the file lacks keep their fresh initialisation)."""
    rconf: RestorerConfig = small_default_config(cfg.resolution)
    if cfg.ref_id_tokens > 0:
        rconf.ref_id = {"tokens": int(cfg.ref_id_tokens), "network": cfg.face_id_network}
    model = OneStepRestorer(rconf)
    if cfg.init:
        from ..loaders.project_format import load_restorer

        start = load_restorer(cfg.init).state_dict()
        own = model.state_dict()
        shared = {k: v for k, v in start.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(shared, strict=False)
        fresh = sorted({k.split(".")[0] for k in own if k not in shared})
        print(f"initialised from {cfg.init}: {len(shared)} tensors; fresh: {fresh}", flush=True)
    return model.to(device)


def train(cfg: TrainConfig) -> dict:
    rank, world, device = setup_distributed()
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)
    amp = device.type == "cuda" and cfg.mixed_precision in ("bf16", "fp16")
    amp_dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model = build_model(cfg, device)
    model.prompt_embeds.requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)

    identity = None
    if cfg.weights.identity > 0 or cfg.weights.identity_features > 0:
        if cfg.identity_loss_network:
            from ..face_id import load_face_id

            identity = load_face_id(cfg.identity_loss_network)
        elif model.face_id is not None and not cfg.identity_weights:
            identity = model.face_id  # the channel's own frozen network
        else:
            from ..models.ref_identity import build_face_id_network

            identity = build_face_id_network(cfg.face_id_network)[0]
            if cfg.identity_weights:
                identity.load_state_dict(load_file(cfg.identity_weights))
        identity = identity.to(device).eval().requires_grad_(False)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    use_gan = cfg.weights.adversarial > 0 or cfg.weights.feature_matching > 0
    disc = MultiScaleDiscriminator().to(device) if use_gan else None
    d_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.99), weight_decay=0.0) \
        if use_gan else None
    step, elapsed_total = 0, 0.0
    ckpt_path = out_dir / "checkpoint.pt"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        if use_gan and "disc" in state:
            disc.load_state_dict(state["disc"])
            d_opt.load_state_dict(state["d_opt"])
        step, elapsed_total = int(state["step"]), float(state["elapsed"])
        if rank == 0:
            print(f"resumed from {ckpt_path} at step {step} ({elapsed_total / 60:.1f} min trained)")
    elif use_gan and cfg.init_discriminator:
        load_discriminator(disc, cfg.init_discriminator)
        if rank == 0:
            print(f"discriminator initialised from {cfg.init_discriminator}", flush=True)

    identity_loss = None if identity is None else IdentityLoss(
        identity, IdentityLossConfig(views=cfg.identity_views, features=cfg.weights.identity_features > 0))
    step_fn = TrainStep(model, identity_loss, cfg, disc)
    disc_step = disc
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_fn = nn.parallel.DistributedDataParallel(step_fn, device_ids=ids, find_unused_parameters=True)
        if use_gan:
            disc_step = nn.parallel.DistributedDataParallel(disc, device_ids=ids)

    cache = FaceCache.load(cfg.data)
    if cache.crop_size != cfg.resolution:
        raise ValueError(f"{cfg.data} holds {cache.crop_size}px crops; this run trains at {cfg.resolution}px")
    dcfg = TrainDataConfig(seed=cfg.seed + 1000 * (step // 1000) + rank, clean_prob=cfg.clean_prob,
                           wrong_ref_prob=cfg.wrong_ref_prob,
                           degradation=DegradationConfig(scale=(cfg.min_scale, cfg.max_scale)))
    dataset = RestorationDataset(cache, "train", dcfg)
    vset = build_validation_set(cache, scales=(4, 8), num_refs=4, seed=1234) if rank == 0 else None
    g = torch.Generator().manual_seed(cfg.seed + step + 7919 * rank)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**8, generator=g)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=cfg.num_workers > 0,
        worker_init_fn=_worker_init)

    log_path = out_dir / "train_log.jsonl"
    t_start = time.time()
    last_ckpt = t_start
    rng = torch.Generator().manual_seed(cfg.seed + 31 * step + rank)

    def save_checkpoint() -> None:
        if rank != 0:
            return
        extra = {"disc": disc.state_dict(), "d_opt": d_opt.state_dict()} if use_gan else {}
        _atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(),
                            "opt": opt.state_dict(), "step": step, **extra,
                            "elapsed": elapsed_total + time.time() - t_start,
                            "config": json.dumps(asdict(cfg), default=str)}, ckpt_path)

    model.train()
    running: dict = {}
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        constant = bool(torch.rand((), generator=rng) < cfg.constant_prompt_prob)
        gan_scale = min(1.0, step / max(1, cfg.gan_warmup_steps)) if use_gan else 0.0
        if use_gan:
            disc.requires_grad_(False)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            losses = step_fn(batch, constant, gan_scale)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        restored = losses.pop("restored")
        if use_gan:
            disc.requires_grad_(True)
            n = batch["hq"].shape[0]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                # one forward over real and restored faces: DDP expects one forward per backward
                both = disc_step(torch.cat([batch["hq"], restored.to(batch["hq"].dtype)]))
            d_loss = d_hinge_loss([(lg[:n], []) for lg, _ in both], [(lg[n:], []) for lg, _ in both])
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            losses["disc"] = d_loss.detach()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm.detach(), 1 - d)
        step += 1
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        now = time.time()
        if rank == 0 and step % cfg.log_every == 0:
            rec = {"step": step, "lr": lr_at(step, cfg), "minutes": (elapsed_total + now - t_start) / 60,
                   **{k: v / cfg.log_every for k, v in running.items()}}
            running = {}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
        if rank == 0 and step % cfg.val_every == 0:
            metrics = evaluate(ema, vset, device, cfg.val_samples, identity)
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "val": metrics}) + "\n")
            print("val", json.dumps(metrics), flush=True)
        if now - last_ckpt > cfg.checkpoint_minutes * 60:
            save_checkpoint()
            last_ckpt = now
        if _all_ranks_agree(now - t_start > cfg.minutes * 60, world, device):
            break

    save_checkpoint()
    summary = {}
    if rank == 0:
        metrics = evaluate(ema, vset, device, cfg.val_samples, identity)
        summary = {"step": step, "minutes_trained": (elapsed_total + time.time() - t_start) / 60,
                   "world_size": world, "device": torch.cuda.get_device_name(device)
                   if device.type == "cuda" else "cpu", "val": metrics, "config": asdict(cfg)}
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": step, "val": metrics, "final": True}) + "\n")
        ema.invalidate_weight_hash()
        save_restorer(out_dir / "restorer.safetensors", ema, info={"training": summary}, overwrite=True)
        if use_gan:
            save_discriminator(disc, out_dir / DISCRIMINATOR_FILE)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        print("summary", json.dumps(summary, default=str), flush=True)
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--total-steps", type=int, default=15000)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--val-samples", type=int, default=96)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--identity", dest="identity_weights", default=None)
    p.add_argument("--identity-loss-network", default=None,
                   help="converted face-ID file (python -m restorer_core.face_id.convert) for the identity loss")
    p.add_argument("--mixed-precision", default="bf16", choices=["bf16", "fp16", "no"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="project-format restorer to start from")
    p.add_argument("--init-discriminator", default=None,
                   help="discriminator.safetensors of an earlier run to continue the adversarial term from")
    p.add_argument("--ref-id-tokens", type=int, default=TrainConfig.ref_id_tokens)
    p.add_argument("--face-id-network", default=TrainConfig.face_id_network,
                   choices=("identity_embedder", "mobilefacenet"))
    p.add_argument("--identity-views", type=int, default=TrainConfig.identity_views,
                   help="average the identity loss over this many shifted/zoomed/mirrored views")
    p.add_argument("--d-lr", type=float, default=TrainConfig.d_lr)
    p.add_argument("--gan-warmup-steps", type=int, default=TrainConfig.gan_warmup_steps)
    p.add_argument("--clean-prob", type=float, default=TrainConfig.clean_prob)
    p.add_argument("--wrong-ref-prob", type=float, default=TrainConfig.wrong_ref_prob)
    p.add_argument("--min-scale", type=float, default=TrainConfig.min_scale)
    p.add_argument("--max-scale", type=float, default=TrainConfig.max_scale)
    for f in fields(LossWeights):
        p.add_argument(f"--w-{f.name.replace('_', '-')}", dest=f"w_{f.name}", type=float, default=f.default,
                       help=f"weight of the {f.name} loss")
    a = vars(p.parse_args(argv))
    weights = LossWeights(**{f.name: a.pop(f"w_{f.name}") for f in fields(LossWeights)})
    cfg = TrainConfig(**a, weights=weights)
    train(cfg)


if __name__ == "__main__":
    main()

"""Training losses for the one-step restorer: pixel, SSIM, identity (embedding and face-perceptual)
and landmark attention.

Images are [B, 3, H, W] in 0..1 unless said otherwise.

Landmark attention loss (after InstantRestore's landmark loss, reformulated): for every
reference-attention layer, the input's queries inside a facial region (right eye, left eye,
nose, mouth: small discs around the 5 landmarks at the layer's token grid) should put their
attention on the *same* region of each valid reference. We take the softmax of q k^T * scale
over a reference's tokens ("per_reference") or over all valid references' tokens ("joint")
and penalise -log(attention mass inside the matching region).

Differences from the official code (face_replace/training/coach.py `calc_landmark_loss` and
restore_dataset.py `_get_gt_attn_probs_per_layer_per_cond`): the official loss picks ONE random
up-block layer and ONE random reference per step, builds a target map with a Gaussian
(sigma = grid/32) around each of ~700 dense landmarks of the reference, min-max normalises
both the predicted attention (over the whole [own | refs] softmax) and that target, and takes
their MSE on the query rows at the input's landmark cells (weight 5000; batch size 1 only).
Its target Gaussian is built on an 'ij' meshgrid with x first while rows are indexed y*size+x,
so the target is transposed relative to the query indexing. Here: 5-point regions (what our
detector gives), every layer and every valid reference at once, any batch size, and a
log-mass objective that is scale-free (no weight of 5000 needed, ~1 is a sane start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..faces.identity import IdentityEmbedder, load_identity_embedder

# ----------------------------------------------------------------------------- pixel / SSIM


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean L1 ("l1") or squared error ("l2"), computed in float32."""
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    if kind == "l2":
        return F.mse_loss(pred.float(), target.float())
    raise ValueError(f"pixel loss kind must be 'l1' or 'l2', got {kind!r}")


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2.0
    g = torch.exp(-(ax**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype).expand(channels, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004; Gaussian window, valid filtering), differentiable."""
    x, y = pred.float(), target.float()
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(window, sigma, c, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, **kw) -> torch.Tensor:
    """1 - SSIM."""
    return 1.0 - ssim(pred, target, **kw)


# ----------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class IdentityLossConfig:
    """How the output is compared with the target through a frozen face-ID network.

    views: the embeddings are compared under this many views of the pair (the first the crops as
    they are, the others one random shift / zoom / mirror applied to both): an output that only
    pleases the network at one exact framing gains little, which keeps the restorer from learning
    the network's blind spots instead of the face (an ensemble over transformations).
    max_shift / max_zoom: the views' largest shift (share of the crop) and zoom (relative).
    features: also compare the network's intermediate activations (a face-perceptual loss; needs
    a network with a `features` sequence, as IdentityEmbedder has).
    """

    views: int = 1
    max_shift: float = 0.04
    max_zoom: float = 0.06
    features: bool = False

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")


def random_views(batch: int, views: int, max_shift: float, max_zoom: float,
                 device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[views * batch, 2, 3] affine_grid matrices: the identity for view 0, then random shift,
    zoom and mirror per view and sample (the same matrix is applied to output and target)."""
    theta = torch.zeros(views, batch, 2, 3)
    theta[0, :, 0, 0] = theta[0, :, 1, 1] = 1.0
    if views > 1:
        n = (views - 1, batch)
        zoom = 1.0 + (torch.rand(n, generator=generator) * 2 - 1) * max_zoom
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        theta[1:, :, 0, 0] = mirror / zoom
        theta[1:, :, 1, 1] = 1.0 / zoom
        theta[1:, :, :, 2] = (torch.rand(n + (2,), generator=generator) * 2 - 1) * 2 * max_shift
    return theta.reshape(views * batch, 2, 3).to(device)


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over positions of 1 - cosine between channel vectors (scale-free, 0..2)."""
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=1, eps=1e-6)).mean()


class IdentityLoss(nn.Module):
    """Identity terms with a frozen face-ID network (always in eval mode): ``identity`` = 1 - cos
    of the embeddings of output and target (averaged over views) and, with config.features,
    ``identity_features`` = the face-perceptual distance of the network's stage activations."""

    def __init__(self, embedder: Optional[nn.Module] = None, config: IdentityLossConfig = IdentityLossConfig()):
        super().__init__()
        self.embedder = embedder if embedder is not None else load_identity_embedder()
        self.embedder.eval().requires_grad_(False)
        self.config = config
        if config.features and not hasattr(self.embedder, "stage_features"):
            raise ValueError(f"{type(self.embedder).__name__} has no `stage_features`: the face-perceptual "
                             "loss needs an IdentityEmbedder or a converted face-ID network (FaceIdEmbedder)")

    def train(self, mode: bool = True) -> "IdentityLoss":
        super().train(mode)
        self.embedder.eval()  # BatchNorm statistics stay frozen
        return self

    def terms(self, pred: torch.Tensor, target: torch.Tensor,
              generator: Optional[torch.Generator] = None) -> dict:
        c = self.config
        dtype = next(self.embedder.parameters()).dtype
        pred, target = pred.to(dtype), target.to(dtype)
        if c.views > 1:
            theta = random_views(pred.shape[0], c.views, c.max_shift, c.max_zoom, pred.device, generator)
            grid = F.affine_grid(theta.to(dtype), [theta.shape[0], *pred.shape[1:]], align_corners=False)

            def view(x):
                return F.grid_sample(x.repeat(c.views, 1, 1, 1), grid, mode="bilinear",
                                     padding_mode="reflection", align_corners=False)

            pred, target = view(pred), view(target)
        with torch.no_grad():
            e_t = self.embedder(target)
        e_p = self.embedder(pred)
        out = {"identity": (1.0 - (e_p.float() * e_t.float()).sum(-1)).mean()}
        if c.features:
            with torch.no_grad():
                f_t = self.embedder.stage_features(target)
            f_p = self.embedder.stage_features(pred)
            out["identity_features"] = sum(feature_distance(p, t) for p, t in zip(f_p, f_t)) / len(f_p)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(pred, target)["identity"]


# ----------------------------------------------------------------------------- landmark attention

# Regions over the 5-point order (right eye, left eye, nose, right mouth, left mouth);
# the mouth region also covers the midpoint of the two corners.
REGION_NAMES = ("right_eye", "left_eye", "nose", "mouth")
NUM_REGIONS = len(REGION_NAMES)
_NEG = -1e9  # finite "minus infinity": fully masked rows stay finite, so masked-out terms cannot leak NaN gradients


@dataclass(frozen=True)
class LandmarkLossConfig:
    radius: float = 0.07  # disc radius as a fraction of the crop size
    normalize: str = "per_reference"  # "per_reference": softmax over each reference's tokens; "joint": over all valid refs
    scale: Optional[float] = None  # attention scale; default d ** -0.5


def _region_points(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 5, 2] -> points [..., 6, 2] (adds the mouth midpoint) and their region ids [6]."""
    mid = landmarks[..., 3:5, :].mean(dim=-2, keepdim=True)
    pts = torch.cat([landmarks, mid], dim=-2)
    ids = torch.tensor([0, 1, 2, 3, 3, 3], device=landmarks.device)
    return pts, ids


def region_masks(landmarks: torch.Tensor, crop_size: int, h: int, w: int, radius: float = 0.07) -> tuple[torch.Tensor, torch.Tensor]:
    """Facial-region masks on an h x w token grid.

    landmarks: [..., 5, 2] crop pixel coordinates (pixel-centre convention).
    Returns (masks [..., 4, h*w] bool, dist [..., 4, h*w]: distance from each cell centre to the
    region's nearest point, in crop pixels). A cell belongs to a region when its centre lies
    within radius * crop_size of one of the region's points, or when it contains such a point
    (so coarse grids still get one cell per point). Points outside the crop mark nothing.
    """
    lm = landmarks.float()
    pts, ids = _region_points(lm)  # [..., P, 2]
    cell_w, cell_h = crop_size / w, crop_size / h
    ys = (torch.arange(h, device=lm.device, dtype=torch.float32) + 0.5) * cell_h - 0.5
    xs = (torch.arange(w, device=lm.device, dtype=torch.float32) + 0.5) * cell_w - 0.5
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)  # [T, 2] as (x, y)
    d = torch.linalg.vector_norm(pts[..., :, None, :] - centres, dim=-1)  # [..., P, T]
    inside_crop = ((pts > -0.5) & (pts < crop_size - 0.5)).all(-1)  # [..., P]
    col = ((pts[..., 0] + 0.5) / cell_w).floor().clamp(0, w - 1)
    row = ((pts[..., 1] + 0.5) / cell_h).floor().clamp(0, h - 1)
    own_cell = (row * w + col).long()  # [..., P]
    hit = d <= radius * crop_size
    hit = hit | F.one_hot(own_cell, h * w).bool()
    hit = hit & inside_crop[..., None]
    d = d.masked_fill(~hit, math.inf)
    shape = d.shape[:-2]
    masks = torch.zeros(*shape, NUM_REGIONS, h * w, dtype=torch.bool, device=lm.device)
    dist = torch.full((*shape, NUM_REGIONS, h * w), math.inf, device=lm.device)
    for r in range(NUM_REGIONS):
        sel = ids == r
        masks[..., r, :] = hit[..., sel, :].any(-2)
        dist[..., r, :] = d[..., sel, :].amin(-2)
    return masks, dist


def query_region_labels(landmarks: torch.Tensor, crop_size: int, h: int, w: int, radius: float = 0.07) -> torch.Tensor:
    """Region id (0..3) of each input token, -1 outside every region; overlaps go to the nearest region. [B, h*w]"""
    masks, dist = region_masks(landmarks, crop_size, h, w, radius)
    label = dist.argmin(dim=-2)
    return torch.where(masks.any(dim=-2), label, torch.full_like(label, -1))


def _grid(n: int) -> tuple[int, int]:
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ValueError(f"landmark attention loss needs square token grids, got {n} tokens")
    return side, side


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, heads * d] -> [B, heads, N, d]."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def reference_keys_to_heads(keys: torch.Tensor, heads: int) -> torch.Tensor:
    """ReferenceKV keys [Bk, R, T, heads * d] -> [Bk, heads, R*T, d] (reference-major), the layout this loss takes."""
    bk, r, t, c = keys.shape
    return keys.reshape(bk, r * t, heads, c // heads).transpose(1, 2)


def landmark_attention_layer_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    landmarks: torch.Tensor,
    ref_landmarks: torch.Tensor,
    ref_mask: torch.Tensor,
    crop_size: int,
    cfg: LandmarkLossConfig = LandmarkLossConfig(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed -log(mass on the matching region) and the number of terms, for one layer.

    q: [B, H, Nq, d] input queries; k: [B or 1, H, R*T, d] reference keys (reference-major);
    landmarks: [B, 5, 2]; ref_landmarks: [B, R, 5, 2]; ref_mask: [B, R] bool (valid references).
    """
    b, heads, nq, dim = q.shape
    r = ref_mask.shape[1]
    if k.shape[2] % r:
        raise ValueError(f"reference keys have {k.shape[2]} tokens, not a multiple of {r} references")
    t = k.shape[2] // r
    hq, wq = _grid(nq)
    hk, wk = _grid(t)
    labels = query_region_labels(landmarks, crop_size, hq, wq, cfg.radius)  # [B, Nq]
    rows = (labels >= 0).any(0).nonzero().squeeze(1)  # query rows used by any batch element
    zero = q.new_zeros((), dtype=torch.float32)
    if rows.numel() == 0 or not bool(ref_mask.any()):
        return zero, zero
    labels = labels[:, rows]  # [B, n]
    n = rows.numel()
    ref_regions, _ = region_masks(ref_landmarks, crop_size, hk, wk, cfg.radius)  # [B, R, 4, T]
    idx = labels.clamp(min=0)[:, None, :, None].expand(b, r, n, t)
    target = torch.gather(ref_regions, 2, idx).permute(0, 2, 1, 3)  # [B, n, R, T]

    scale = cfg.scale if cfg.scale is not None else dim**-0.5
    qs = q[:, :, rows].float()
    logits = torch.matmul(qs, k.float().transpose(-1, -2).expand(b, -1, -1, -1)) * scale  # [B, H, n, R*T]
    logits = logits.view(b, heads, n, r, t)
    valid_ref = ref_mask.bool()[:, None, None, :, None]  # [B, 1, 1, R, 1]
    if cfg.normalize == "per_reference":
        logp = logits.log_softmax(dim=-1)
        log_mass = logp.masked_fill(~target[:, None], _NEG).logsumexp(-1)  # [B, H, n, R]
        weight = (labels >= 0)[:, :, None] & ref_mask.bool()[:, None, :] & target.any(-1)  # [B, n, R]
    elif cfg.normalize == "joint":
        logits = logits.masked_fill(~valid_ref, _NEG)
        logp = logits.flatten(-2).log_softmax(dim=-1).view(b, heads, n, r, t)
        keep = target[:, None] & valid_ref
        log_mass = logp.masked_fill(~keep, _NEG).flatten(-2).logsumexp(-1)[..., None]  # [B, H, n, 1]
        weight = ((labels >= 0) & keep.squeeze(1).flatten(-2).any(-1))[:, :, None]  # [B, n, 1]
    else:
        raise ValueError(f"normalize must be 'per_reference' or 'joint', got {cfg.normalize!r}")
    w = weight[:, None].expand_as(log_mass)
    terms = torch.where(w, -log_mass, torch.zeros_like(log_mass))
    return terms.sum(), w.sum().to(torch.float32)


def landmark_attention_loss(
    queries: Sequence[torch.Tensor],
    keys: Sequence[torch.Tensor],
    landmarks: torch.Tensor,
    ref_landmarks: torch.Tensor,
    ref_mask: torch.Tensor,
    crop_size: int,
    cfg: LandmarkLossConfig = LandmarkLossConfig(),
) -> torch.Tensor:
    """Mean -log(attention mass on the matching facial region) over all layers, heads, region
    queries and valid references. queries/keys: one [B, H, Nq, d] / [B|1, H, R*T, d] per layer.
    Returns 0 (with a graph) when no term applies, e.g. a batch without references."""
    if len(queries) != len(keys):
        raise ValueError(f"{len(queries)} query tensors but {len(keys)} key tensors")
    total = queries[0].new_zeros((), dtype=torch.float32) if queries else torch.zeros(())
    count = torch.zeros((), device=total.device)
    for q, k in zip(queries, keys):
        s, c = landmark_attention_layer_loss(q, k, landmarks, ref_landmarks, ref_mask, crop_size, cfg)
        total = total + s
        count = count + c
    if queries:
        total = total + 0.0 * sum(q.sum() for q in queries)  # keep a graph even when nothing applies
    return total / count.clamp(min=1.0)

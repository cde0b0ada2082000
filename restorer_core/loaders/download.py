"""Where official weights must be on disk, and opt-in downloads from the Hugging Face Hub.

Offline first: :func:`resolve_weights` only looks at the disk unless downloads are allowed, and
when the files are missing it raises :class:`ModelNotFoundError` naming the exact files, the
folder to put them in, and where they come from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from inspect import signature
from pathlib import Path
from typing import Optional

from ..errors import ModelNotFoundError


@dataclass(frozen=True)
class WeightSpec:
    """A known set of official weight files."""

    name: str
    files: tuple  # paths inside the model folder (the Hub repo's own layout)
    repo_id: Optional[str]  # Hugging Face repo holding `files`; None: manual download only
    origin: str  # where a person gets the files
    alternatives: tuple = ()  # other accepted file sets (e.g. one single-file checkpoint)
    note: str = ""


KNOWN_WEIGHTS: dict[str, WeightSpec] = {
    "sd-turbo": WeightSpec(
        "sd-turbo", ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "stabilityai/sd-turbo", "https://huggingface.co/stabilityai/sd-turbo",
        alternatives=(("sd_turbo.safetensors",),)),
    "sd21-base": WeightSpec(
        "sd21-base", ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                      "vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
        "stabilityai/stable-diffusion-2-1-base",
        "https://huggingface.co/stabilityai/stable-diffusion-2-1-base",
        alternatives=(("v2-1_512-ema-pruned.safetensors",), ("v2-1_512-nonema-pruned.safetensors",)),
        note="If that Hub repo is unavailable, the OSDFace README points to the same model on "
             "ModelScope (stabilityai/stable-diffusion-2-1-base)."),
    "sd-vae-ft-mse": WeightSpec(
        "sd-vae-ft-mse", ("config.json", "diffusion_pytorch_model.safetensors"),
        "stabilityai/sd-vae-ft-mse", "https://huggingface.co/stabilityai/sd-vae-ft-mse",
        alternatives=(("vae-ft-mse-840000-ema-pruned.safetensors",),)),
    "osdface": WeightSpec(
        "osdface", ("pytorch_lora_weights.safetensors", "embedding_change_weights.pth", "associate_2.ckpt"),
        "jkwang28/OSDFace", "https://huggingface.co/jkwang28/OSDFace",
        note="The OSDFace README also links a Google Drive folder ('pretrained/') with these files. "
             "OSDFace also needs 'sd21-base'."),
    "instantrestore": WeightSpec(
        "instantrestore", ("final_model_ckpt.pt",), "hwdz15508/InstantRestore",
        "the InstantRestore code page (github.com/snap-research/InstantRestore), which links "
        "https://huggingface.co/hwdz15508/InstantRestore",
        note="The ablations base_ablation_ckpt.pt, adain_ablation_ckpt.pt and "
             "lmattn_ablation_ckpt.pt load the same way."),
}


def _complete(folder: Path, files) -> bool:
    return all((folder / f).is_file() for f in files)


def _found(spec: WeightSpec, folder: Path) -> Optional[Path]:
    """The model folder (or single file) if a complete file set is on disk, else None."""
    for cand in (folder / spec.name, folder):
        if _complete(cand, spec.files):
            return cand / spec.files[0] if len(spec.files) == 1 else cand
        for alt in spec.alternatives:
            if _complete(cand, alt):
                return cand / alt[0] if len(alt) == 1 else cand
    return None


def missing_message(spec: WeightSpec, folder: Path, reason: str = "") -> str:
    target = folder / spec.name
    lines = [f"{spec.name} weights not found{': ' + reason if reason else ''}.",
             f"Put these files in {target}{os.sep}: {', '.join(spec.files)}.",
             f"They come from {spec.origin} (same file names)."]
    if spec.alternatives:
        alts = " or ".join(", ".join(a) for a in spec.alternatives)
        lines.append(f"A single {alts} in that folder works too.")
    if spec.note:
        lines.append(spec.note)
    if spec.repo_id and "download" not in reason:
        lines.append("Or allow downloads (allow_download=True) to fetch them from the Hugging Face Hub.")
    return " ".join(lines)


def download_failure(spec: WeightSpec, filename: str, exc: Exception) -> str:
    """Why a download of one file failed, in words (huggingface_hub's error classes by name)."""
    kind = type(exc).__name__
    if "EntryNotFound" in kind:
        return (f"download failed: the Hub repository {spec.repo_id} has no file {filename} (renamed or removed "
                "there; get the files by hand from the page below)")
    if "RepositoryNotFound" in kind or "GatedRepo" in kind:
        return f"download failed: the Hub repository {spec.repo_id} is not reachable (renamed, removed, private or gated)"
    return f"download of {filename} from {spec.repo_id} failed ({kind}: {exc}); run it again"


def progress_bar_class(label: str):
    """A tqdm class for hf_hub_download that always shows, labelled with the file (huggingface_hub's
    own hides itself when stderr is not a terminal, as in ComfyUI's log window, and names the
    temporary file): bytes, speed, time left, at most every second."""
    from tqdm.auto import tqdm

    class DownloadBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["desc"] = label
            kwargs.setdefault("mininterval", 1.0)
            super().__init__(*args, **kwargs)

    return DownloadBar


# huggingface_hub >= 1 downloads each attempt into a fresh <file>.<etag>.<8 hex>.incomplete and never
# reuses one (older versions resume <file>.<etag>.incomplete, which is kept); a killed download
# leaves such a file behind.
_STALE_PARTIAL = re.compile(r"\.[0-9a-f]{40,64}\.[0-9a-f]{8}\.incomplete$")


def remove_stale_partials(target: Path) -> list:
    """Delete partial files of killed downloads that no later download will reuse; returns them."""
    folder = target / ".cache" / "huggingface" / "download"
    stale = [p for p in folder.rglob("*.incomplete") if _STALE_PARTIAL.search(p.name)] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weights(name: str, folder: Path, allow_download: bool = False) -> Path:
    """Path of the known weights `name` under `folder` (the file, for one-file sets; else the folder).

    Looks in ``folder/<name>/`` and in ``folder`` itself.  Downloads with huggingface_hub only
    when `allow_download` is true and the Hub is not switched off (HF_HUB_OFFLINE); otherwise,
    and on any download failure, raises ModelNotFoundError saying what to put where.
    """
    if name not in KNOWN_WEIGHTS:
        raise ModelNotFoundError(f"unknown weights {name!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))}")
    spec = KNOWN_WEIGHTS[name]
    folder = Path(folder).expanduser()
    found = _found(spec, folder)
    if found is not None:
        return found
    if not allow_download:
        raise ModelNotFoundError(missing_message(spec, folder))
    if spec.repo_id is None:
        raise ModelNotFoundError(missing_message(spec, folder, "they cannot be downloaded automatically"))
    if _offline():
        raise ModelNotFoundError(missing_message(spec, folder, "downloads are off (HF_HUB_OFFLINE is set)"))
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelNotFoundError(missing_message(
            spec, folder, "download needs the huggingface_hub package (pip install huggingface_hub)")) from None
    target = folder / spec.name
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    for f in spec.files:
        if (target / f).is_file():
            continue
        try:
            # writes target/.cache/huggingface/download/<f>.<etag>[.<id>].incomplete and moves it to
            # target/<f> only when complete; a dropped connection is resumed within the call (Range)
            extra = {"tqdm_class": progress_bar_class(f"{spec.name}: {f}")} if "tqdm_class" in signature(hf_hub_download).parameters else {}
            hf_hub_download(repo_id=spec.repo_id, filename=f, local_dir=str(target), **extra)
        except Exception as exc:  # network, auth, missing file: all end with what to do
            raise ModelNotFoundError(missing_message(spec, folder, download_failure(spec, f, exc))) from exc
    found = _found(spec, folder)
    if found is None:
        raise ModelNotFoundError(missing_message(spec, folder, "the download did not produce every file"))
    return found

"""Reference banks: aligned crops of one person's faces.

A bank is built once from a handful of photos of the person (one usable face per photo) and
saved as a small safetensors file. It knows no restorer: what a restorer derives from it (the
reference keys/values) is computed and cached by restorer_core.restore.reference_cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..io.atomic import atomic_path
from ..errors import BankError, ImageReadError
from ..options import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

BANK_FORMAT = "onestep-face-restore/bank/1"
DEFAULT_ALIGN_SIZE = 512

Source = Union[str, os.PathLike, np.ndarray]


# ----------------------------------------------------------------------------- records


@dataclass
class BankEntry:
    """Where one reference crop came from: source name, sha256 of the source (file bytes or
    pixels), the face box in the source image [x0, y0, x1, y1] and the detector score."""

    source: str
    sha256: str
    box: list
    score: float

    @property
    def face_size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class RejectedSource:
    """A source that gave no reference face, and why (shown to the user)."""

    source: str
    reason: str


@dataclass
class ReferenceBank:
    """Aligned reference faces of one person.

    crops: uint8 [R, 3, A, A] on the FFHQ template at align_size A (restorers resize to their
    own resolution). path: the file it was loaded from / saved to (the reference cache keeps
    its files next to it).
    """

    crops: torch.Tensor
    entries: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    align_size: int = DEFAULT_ALIGN_SIZE
    name: str = ""
    path: Optional[Path] = None

    def __post_init__(self) -> None:
        c = self.crops
        if not isinstance(c, torch.Tensor) or c.dtype != torch.uint8 or c.dim() != 4 or c.shape[1] != 3:
            raise BankError(f"bank crops must be a uint8 tensor [R, 3, A, A], got "
                            f"{getattr(c, 'dtype', type(c).__name__)} {tuple(getattr(c, 'shape', ()))}")
        if c.shape[2] != self.align_size or c.shape[3] != self.align_size:
            raise BankError(f"bank crops are {c.shape[2]}x{c.shape[3]} but align_size is {self.align_size}")
        if len(self.entries) != c.shape[0]:
            raise BankError(f"bank has {c.shape[0]} crops but {len(self.entries)} entries")

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    def bank_hash(self) -> str:
        """sha256 over the crops (what the reference keys/values depend on)."""
        h = hashlib.sha256(f"{BANK_FORMAT}|{tuple(self.crops.shape)}".encode())
        h.update(self.crops.contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def crops_float(self, indices: Optional[Sequence[int]] = None, size: Optional[int] = None) -> torch.Tensor:
        """Crops as float32 [R, 3, size, size] in 0..1 (area-resized when shrinking)."""
        crops = self.crops if indices is None else self.crops[list(indices)]
        x = crops.float() / 255.0
        if size is not None and size != self.align_size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < self.align_size).clamp(0.0, 1.0)
        return x

    def crops_hwc(self) -> np.ndarray:
        """Crops as uint8 numpy [R, A, A, 3] (for previews and identity embedders)."""
        return self.crops.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def summary(self) -> dict:
        """JSON-able description for reports and `bank info`."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "hash": self.bank_hash(),
            "align_size": self.align_size,
            "references": [asdict(e) for e in self.entries],
            "rejected": [asdict(r) for r in self.rejected],
        }


# ----------------------------------------------------------------------------- building


def list_images(folder: Union[str, os.PathLike]) -> list:
    """Image files directly inside a folder, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def expand_sources(sources: Sequence[Source]) -> list:
    """Folders become their images (sorted); files and arrays pass through in order."""
    out: list = []
    for src in sources:
        if isinstance(src, np.ndarray):
            out.append(src)
        elif Path(src).is_dir():
            out.extend(list_images(src))
        else:
            out.append(Path(src))
    return out


def _read_source(src: Source, position: int) -> tuple:
    """(display name, sha256, rgb uint8) of one source; ImageReadError for unreadable files."""
    from ..io.imageio import load_image, to_rgb8

    if isinstance(src, np.ndarray):
        rgb = to_rgb8(src)
        digest = hashlib.sha256(np.ascontiguousarray(src).tobytes()).hexdigest()
        return f"array[{position}]", digest, rgb
    path = Path(src)
    image = load_image(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return str(path), digest, image.rgb8


def pick_reference_face(faces: Sequence[Any], ambiguity_ratio: float = 0.8,
                        min_face_size: float = 24.0) -> tuple:
    """(face, None) for the one clear face of a reference photo, else (None, reason).

    The largest face wins unless a second face is at least `ambiguity_ratio` of its size:
    then the photo is ambiguous (whose face is the reference?) and is rejected.
    """
    if not faces:
        return None, "no face found"
    ranked = sorted(faces, key=lambda f: -f.size)
    best = ranked[0]
    if len(ranked) > 1 and ranked[1].size >= ambiguity_ratio * best.size:
        return None, (f"ambiguous: {len(ranked)} faces, the two largest of similar size "
                      f"({best.size:.0f} px and {ranked[1].size:.0f} px); crop the photo to one person")
    if best.size < min_face_size:
        return None, f"face too small ({best.size:.0f} px < {min_face_size:.0f} px); use a sharper, closer photo"
    return best, None


def build_bank(sources: Sequence[Source], detector: Any = "yunet", align_size: int = DEFAULT_ALIGN_SIZE,
               ambiguity_ratio: float = 0.8, min_face_size: float = 24.0, name: str = "") -> ReferenceBank:
    """Detect and align one face per source (paths, folders, or HxWx3 uint8 RGB arrays).

    Unreadable sources, photos without a face, with two similar-size faces, with a tiny face,
    or duplicates of an earlier source are listed in `rejected` with the reason. Raises
    BankError when no reference face remains.
    """
    from ..faces.align import align_face
    from ..io.imageio import from_float01

    if isinstance(detector, str):
        from ..faces.detect import create_detector

        detector = create_detector(detector)
    expanded = expand_sources(sources)
    if not expanded:
        raise BankError("no reference images given (the folder is empty or has no PNG/JPEG/WEBP/"
                        "TIFF/BMP files); add 1-8 clear photos of the person.")
    crops, entries, rejected, seen = [], [], [], {}
    for pos, src in enumerate(expanded):
        label = f"array[{pos}]" if isinstance(src, np.ndarray) else str(src)
        try:
            label, digest, rgb = _read_source(src, pos)
        except (ImageReadError, OSError, ValueError) as exc:
            rejected.append(RejectedSource(label, f"unreadable: {exc}"))
            continue
        if digest in seen:
            rejected.append(RejectedSource(label, f"duplicate of {seen[digest]}"))
            continue
        face, reason = pick_reference_face(detector.detect(rgb), ambiguity_ratio, min_face_size)
        if face is None:
            rejected.append(RejectedSource(label, reason))
            continue
        seen[digest] = label
        aligned = align_face(rgb, face, crop_size=align_size)
        crop = from_float01(aligned.crop, np.uint8)
        crops.append(torch.from_numpy(crop).permute(2, 0, 1).contiguous())
        entries.append(BankEntry(label, digest, [round(float(v), 2) for v in face.box], round(face.score, 4)))
    if not crops:
        details = "; ".join(f"{Path(r.source).name}: {r.reason}" for r in rejected[:8])
        raise BankError(f"no usable reference face in {len(expanded)} image(s) ({details}). "
                        "Use photos with one clearly visible face each.")
    return ReferenceBank(torch.stack(crops), entries, rejected, align_size, name)


# ----------------------------------------------------------------------------- files


def _atomic_save_file(tensors: dict, metadata: dict, path: Path, overwrite: bool) -> None:
    from safetensors.torch import save_file

    try:
        with atomic_path(path, overwrite) as tmp:
            save_file(tensors, tmp, metadata=metadata)
    except FileExistsError:
        raise BankError(f"{path} already exists; choose another name") from None


def save_bank(bank: ReferenceBank, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
    """Write the bank as one safetensors file (crops + JSON metadata), atomically.
    `load_bank(path)` gives a bank whose K/V cache lives next to the file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise BankError(f"bank files end in .safetensors; got {path.name}")
    if path.exists() and not overwrite:
        raise BankError(f"{path} already exists; choose another name or delete it first")
    if not path.parent.is_dir():
        raise BankError(f"folder {path.parent} does not exist; create it first")
    metadata = {
        "format": BANK_FORMAT,
        "align_size": str(bank.align_size),
        "name": bank.name,
        "bank_hash": bank.bank_hash(),
        "entries": json.dumps([asdict(e) for e in bank.entries]),
        "rejected": json.dumps([asdict(r) for r in bank.rejected]),
    }
    _atomic_save_file({"crops": bank.crops.contiguous().cpu()}, metadata, path, overwrite)
    return path


def load_bank(path: Union[str, os.PathLike]) -> ReferenceBank:
    """Read a bank file; BankError if it is missing, not a bank, or damaged."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BankError(f"reference bank not found: {path}. Build one with "
                        "`python -m restorer_core bank build PHOTOS... --out BANK.safetensors`.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            crops = f.get_tensor("crops") if "crops" in keys else None
    except Exception as exc:  # safetensors raises several error types for bad headers
        raise BankError(f"{path} is not a readable safetensors file ({exc}); rebuild the bank.") from exc
    if meta.get("format") != BANK_FORMAT or crops is None:
        raise BankError(f"{path} is not a reference bank (format {meta.get('format')!r}); build one with "
                        "`python -m restorer_core bank build`.")
    try:
        entries = [BankEntry(**e) for e in json.loads(meta["entries"])]
        rejected = [RejectedSource(**r) for r in json.loads(meta.get("rejected", "[]"))]
        bank = ReferenceBank(crops, entries, rejected, int(meta["align_size"]), meta.get("name", ""), path)
    except (KeyError, TypeError, ValueError) as exc:
        raise BankError(f"{path} has invalid bank metadata ({exc}); rebuild the bank.") from exc
    if meta.get("bank_hash") != bank.bank_hash():
        raise BankError(f"{path} is damaged (its crops do not match the stored hash); rebuild the bank.")
    return bank


def open_bank(spec: Union[str, os.PathLike, ReferenceBank], detector: Any = "yunet",
              align_size: int = DEFAULT_ALIGN_SIZE) -> ReferenceBank:
    """A bank from a bank file, a folder of photos or an image file (built in memory)."""
    if isinstance(spec, ReferenceBank):
        return spec
    path = Path(spec)
    if path.is_file() and path.suffix == ".safetensors":
        return load_bank(path)
    if not path.exists():
        raise BankError(f"references not found: {path}. Give a folder of photos of the person or a "
                        ".safetensors bank.")
    return build_bank([path], detector, align_size, name=path.stem if path.is_file() else path.name)


def select_reference_indices(bank: ReferenceBank, max_refs: int = 4) -> tuple:
    """The references to use: the `max_refs` largest source faces (most real detail), in bank order."""
    if max_refs < 1:
        raise ValueError(f"max_refs must be at least 1, got {max_refs}")
    ranked = sorted(range(len(bank)), key=lambda i: (-bank.entries[i].face_size, i))
    return tuple(sorted(ranked[:max_refs]))

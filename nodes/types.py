"""The Python objects passed between this pack's nodes under custom type names.

FACE_RESTORER: a loaded restorer with its ComfyUI model patcher.
FACES: aligned faces of an image batch (what Detect Faces found, One-Step Restore restored).
REF_BANK: a restorer_core.restore.bank.ReferenceBank (aligned reference crops of one person).
Objects are never changed after a node returns them: ComfyUI caches node outputs and may hand
the same object to several nodes, so every node builds new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

if TYPE_CHECKING:
    from ..restorer_core.restore.pipeline import FaceRestorePipeline

FACE_RESTORER = "FACE_RESTORER"
FACES = "FACES"
REF_BANK = "REF_BANK"


@dataclass
class FaceRestorerHandle:
    """A restorer on ComfyUI's memory manager.

    pipeline: restorer_core.restore.pipeline.FaceRestorePipeline around the restorer (it memoises the
    reference keys/values of the last bank). patcher: the comfy ModelPatcher that loads the
    restorer on `load_device` on demand and may offload it when another model needs memory.
    """

    name: str
    pipeline: "FaceRestorePipeline"
    patcher: Any
    load_device: torch.device
    dtype: torch.dtype
    notes: list = field(default_factory=list)

    @property
    def restorer(self) -> Any:
        return self.pipeline.restorer

    @property
    def resolution(self) -> int:
        return int(self.restorer.config.resolution)

    def describe(self) -> str:
        from ..restorer_core.restore.conditioning import Capabilities

        cfg = self.restorer.config
        caps = Capabilities.of(cfg)
        refs = "reference attention" if caps.references else "trained without references"
        prompt = "visual prompt" if caps.visual_prompt else "fixed caption"
        return (f"{self.name}: {cfg.method}, {cfg.resolution} px, {prompt}, {refs}, "
                f"{str(self.dtype).replace('torch.', '')} on {self.load_device}")


@dataclass
class FaceSet:
    """Aligned faces of a batch of images.

    faces: restorer_core.faces.records.AlignedFace, sorted by (image_index, face_index); face_index is
    stable across frames when detection tracked them. image_sizes: (height, width) of every image
    of the batch the faces came from (paste-back checks it gets the same batch). skipped: one
    line per detected face that selection left out, with the reason. device: where the
    restorer ran (set by One-Step Restore): paste-back runs there too.
    """

    faces: list
    image_sizes: list
    crop_size: int
    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    device: Optional[str] = None

    def __post_init__(self) -> None:
        self.faces = sorted(self.faces, key=lambda f: (f.image_index, f.face_index))

    @property
    def num_images(self) -> int:
        return len(self.image_sizes)

    def for_image(self, index: int) -> list:
        return [f for f in self.faces if f.image_index == index]

    @property
    def restored_count(self) -> int:
        """Faces the restorer changed (a face kept at strength 0 is not one)."""
        return sum(1 for f in self.faces if f.restored is not None and not f.info.get("kept"))

    @property
    def kept_count(self) -> int:
        """Faces left exactly as they were (strength 0: automatic, already sharp, or manual)."""
        return sum(1 for f in self.faces if f.restored is not None and f.info.get("kept"))

    def with_faces(self, faces: list, note: Optional[str] = None, device: Optional[str] = None) -> "FaceSet":
        notes = list(self.notes) + ([note] if note else [])
        return FaceSet(list(faces), list(self.image_sizes), self.crop_size, list(self.skipped), notes,
                       device if device is not None else self.device)

    def crops_tensor(self, restored: bool = False) -> torch.Tensor:
        """IMAGE [N, S, S, 3] of the crops (restored ones where asked and present); one black
        crop when there are no faces, since IMAGE batches cannot be empty in ComfyUI."""
        if not self.faces:
            return torch.zeros(1, self.crop_size, self.crop_size, 3)
        crops = []
        for f in self.faces:
            img = f.restored if restored and f.restored is not None else f.crop
            crops.append(np.asarray(img, dtype=np.float32))
        size = max(c.shape[0] for c in crops)
        if any(c.shape[0] != size for c in crops):
            import cv2

            crops = [c if c.shape[0] == size else cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC)
                     for c in crops]
        return torch.from_numpy(np.clip(np.stack(crops), 0.0, 1.0))

"""Reference Bank nodes: photos of the person -> REF_BANK (aligned reference faces) + a report.

The bank itself is restorer-independent; each restorer derives its reference keys/values from
it, cached on disk (restorer_core.restore.reference_cache) in ComfyUI's models/face_restore_onestep_cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..restorer_core.restore.bank import build_bank, list_images, open_bank
from ..restorer_core.errors import BankError
from . import ops
from .spec import NodeSpec, Output
from .types import REF_BANK


def _detector_widgets() -> dict:
    from .detect import detector_inputs

    widgets = detector_inputs()
    widgets["align_size"] = ("INT", {"default": 512, "min": 128, "max": 1024, "step": 64,
                             "tooltip": "Size the reference faces are aligned and kept at (default 512; restorers "
                                        "resize to their own). Lower it (256) only to save memory."})
    return widgets


def bank_report(bank, names: dict | None = None) -> str:
    """Used references and rejected photos with the reason, one per line."""
    names = names or {}
    lines = [f"reference bank: {len(bank)} face(s) at {bank.align_size} px"]
    for e in bank.entries:
        lines.append(f"  used {names.get(e.source, Path(e.source).name)}: face {e.face_size:.0f} px, score {e.score:.2f}")
    for r in bank.rejected:
        lines.append(f"  rejected {names.get(r.source, Path(r.source).name)}: {r.reason}")
    return "\n".join(lines)


def folder_fingerprint(folder: str) -> str:
    """Hash of the folder's image names, sizes and modification times (for IS_CHANGED)."""
    path = Path(os.path.expanduser(folder.strip()))
    h = hashlib.sha256(str(path).encode())
    if path.is_file():
        st = path.stat()
        h.update(f"{path.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    elif path.is_dir():
        for p in list_images(path):
            st = p.stat()
            h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        h.update(b"missing")
    return h.hexdigest()


BANK_TOOLTIP = ("The reference bank: aligned faces of the person, for One-Step Restore, Restore Faces, "
                "Detect Faces (selection similar) and Face Similarity.")


def folder_bank_inputs() -> dict:
    required = {"folder": ("STRING", {"default": "", "multiline": False,
                           "tooltip": "Full path of a folder with 1-8 photos of the person (one clear face "
                                      "each, varied angles and light help), or of a bank .safetensors "
                                      "file saved by 'python -m restorer_core bank build'."})}
    required.update(_detector_widgets())
    return {"required": required}


def bank_from_folder(folder: str, detector: str, detector_model: str, threshold: float,
                     align_size: int) -> tuple:
    """A reference bank from a folder of photos of one person (or a saved bank .safetensors)."""
    text = folder.strip().strip('"')
    if not text:
        raise BankError("give the folder of reference photos (one clear face each), e.g. "
                        "C:\\refs\\anna or /home/me/refs/anna.")
    path = Path(os.path.expanduser(text))
    photos = path.is_dir() or (path.is_file() and path.suffix != ".safetensors")
    det = ops.get_detector(detector, detector_model, threshold) if photos else None
    bank = open_bank(path, det, int(align_size))
    report = bank_report(bank)
    ops.log(report)
    return (bank, report)


def images_bank_inputs() -> dict:
    required = {"images": ("IMAGE", {"tooltip": "Photos of the person to restore, one clear face "
                                                "each (crop group photos to one face)."})}
    required.update(_detector_widgets())
    return {"required": required}


def bank_from_images(images, detector: str, detector_model: str, threshold: float, align_size: int) -> tuple:
    """A reference bank from an IMAGE batch (e.g. Load Image, or several images batched)."""
    det = ops.get_detector(detector, detector_model, threshold)
    frames = [ops.rgb8(f) for f in ops.image_list(images)]
    names = {f"array[{i}]": f"image {i}" for i in range(len(frames))}
    try:
        bank = build_bank(frames, det, int(align_size), name="images")
    except BankError as exc:
        msg = str(exc)
        for raw, nice in names.items():
            msg = msg.replace(raw, nice)
        raise BankError(msg) from None
    report = bank_report(bank, names)
    ops.log(report)
    return (bank, report)


BANK_FROM_FOLDER = NodeSpec(
    "OneStepReferenceBank", "Reference Bank (folder)",
    "Photos of the person to restore (1-8, one clear face each) from a folder, or a bank saved by the "
    "command line. Photos without exactly one clear face are listed as rejected. Re-runs only when the "
    "folder's images change.",
    folder_bank_inputs,
    (Output(REF_BANK, "reference_bank", BANK_TOOLTIP),
     Output("STRING", "report", "Text: the photos used (face size, score) and the ones rejected, with the reason.")),
    bank_from_folder, "build", fingerprint=lambda folder, **_: folder_fingerprint(folder))

BANK_FROM_IMAGES = NodeSpec(
    "OneStepReferenceBankFromImages", "Reference Bank From Images",
    "Reference faces of the person from images (e.g. Load Image, or several images batched): one clear "
    "face per image; images with no face or several similar-size faces are listed as rejected.",
    images_bank_inputs,
    (Output(REF_BANK, "reference_bank", BANK_TOOLTIP),
     Output("STRING", "report", "Text: the images used (face size, score) and the ones rejected, with the reason.")),
    bank_from_images, "build")

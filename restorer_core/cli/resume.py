"""Resume: which arguments decide an output's pixels, and the shortcut when every input is done."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .plan import RestorePlan

# Arguments that decide an output's pixels: equal values give equal outputs, so resume compares them.
_PIXEL_SETTINGS = ("model", "base", "refs", "mode", "faces", "dtype", "seed", "max_refs", "color_fix", "mask",
                   "feather", "erosion", "strength", "crop_size", "detail_transfer", "format", "detector",
                   "detector_model", "rotate", "video", "no_refs_strength", "no_refs_structure_gate")


def pixel_settings(args: argparse.Namespace) -> dict:
    """The values resume compares: the pixel-deciding arguments, with the model, base and
    reference files standing for their contents (restorer_core.io.outputs.file_identity)."""
    from ..model_zoo import DEFAULT_MODEL_PATH
    from ..io.outputs import file_identity

    values = {k: getattr(args, k, None) for k in _PIXEL_SETTINGS}
    model = DEFAULT_MODEL_PATH if str(args.model or "").strip().lower() in ("", "default") else args.model
    values.update(model=file_identity(model), base=file_identity(args.base), refs=file_identity(args.refs))
    if getattr(args, "identity_gate", None) is not None:  # only when on, so older outputs still resume
        values["identity_gate"] = args.identity_gate
    return values


def all_done_before(plan: RestorePlan) -> Optional[list]:
    """Resume shortcut: when an earlier run already restored every input with these settings,
    their "done" records (so no model is loaded for nothing); else None."""
    from ..io.outputs import PreviousOutputs, file_sha256, find_done_output
    from ..io.report import DONE, ImageRecord

    if plan.args.force:
        return None
    previous = PreviousOutputs.read(plan.out_dir)
    records = []
    for path in plan.inputs:
        try:
            sha = file_sha256(path)
        except OSError:
            return None
        earlier = find_done_output(path, sha, plan.settings_digest, plan.out_dir, previous)
        if earlier is None:
            return None
        records.append(ImageRecord(str(path), output=str(earlier), status=DONE, input_sha256=sha,
                                   note="restored by an earlier run with the same settings; kept (--force redoes it)"))
    return records

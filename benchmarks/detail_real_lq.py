#!/usr/bin/env python
"""The automatic strength on every face of every whole image in $SHARED_DIR/data/real_lq, before
and after the noise-aware detail measure (restorer_core/restore/detail.py).

"before" is the measure without its noise term (detail_calibration.BEFORE: the noise-discounted band
ratio alone); "after" is DEFAULT_DETAIL. Faces are found and cut as the pipeline does by default
(YuNet, 512 px crops); the restorer's resolution is 128 px. No model runs.

    python benchmarks/detail_real_lq.py [--write] [--sheet /tmp/sheet.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from detail_calibration import BEFORE  # noqa: E402
from restorer_core.restore.detail import DEFAULT_DETAIL, estimate_detail  # noqa: E402
from restorer_core.restore.identity_gate import NO_REFS_STRENGTH, structure_factor  # noqa: E402
from restorer_core.faces.detect import cached_detector  # noqa: E402
from restorer_core.io.imageio import load_image, to_rgb8  # noqa: E402
from restorer_core.faces.locate import locate_faces_report  # noqa: E402
from shared_data import shared_dir  # noqa: E402

RESULTS_MD = HERE / "results" / "detail_real_lq.md"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def whole_images(real_lq: Path) -> list:
    return sorted(p for p in real_lq.glob("*/whole_imgs/*") if p.suffix.lower() in IMAGE_SUFFIXES)


def measure(paths: Sequence[Path], resolution: int) -> list:
    """Rows (image, face index, crop, before estimate, after estimate) in reading order."""
    detector = cached_detector("yunet")
    rows = []
    for path in paths:
        rgb = to_rgb8(load_image(path).rgb8)
        for face in locate_faces_report(rgb, detector, 512).faces:
            rows.append((path, face.face_index, face.crop,
                         estimate_detail(face.crop, face.matrix, resolution, BEFORE),
                         estimate_detail(face.crop, face.matrix, resolution, DEFAULT_DETAIL)))
    return rows


def markdown(rows: list, real_lq: Path, resolution: int, seconds: float) -> str:
    cfg = DEFAULT_DETAIL
    lines = ["# Automatic strength on the real low-quality photos: before / after", "",
             f"Every face of every whole image in `real_lq/*/whole_imgs` (YuNet, 512 px crops, restorer "
             f"resolution {resolution} px; no model runs). Before: the noise-discounted band ratio alone "
             f"(sharp {BEFORE.sharp}, blurred {BEFORE.blurred}, no noise term); after: DetailConfig() (sharp {cfg.sharp}, "
             f"blurred {cfg.blurred}, noise_free {cfg.noise_free}, noise_weight {cfg.noise_weight}). "
             f"detail / noise / effective: restorer_core/restore/detail.py. Measured on the 2-core CPU dev machine "
             f"in {seconds:.0f} s by benchmarks/detail_real_lq.py. structure: detail.structure_measure; "
             f"no refs: the strength the pipeline uses without references (strength after x {NO_REFS_STRENGTH:g} x "
             f"the structure gate's factor, restorer_core/restore/identity_gate.py; 0: kept).", "",
             "| image | face | native px | detail | noise | effective | size term | strength before | strength after "
             "| structure | no refs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path, idx, _, old, new in rows:
        no_refs = new.strength * NO_REFS_STRENGTH * structure_factor(True, False, new.structure)
        lines.append(f"| {path.relative_to(real_lq).as_posix()} | {idx} | {new.native_px:.0f} | {new.detail:.3f} "
                     f"| {new.noise:.3f} | {new.effective:.3f} | {new.size_term:.2f} | {old.strength:.2f} "
                     f"| **{new.strength:.2f}** | {new.structure:.2f} | {no_refs:.2f} |")
    before = np.array([r[3].strength for r in rows])
    after = np.array([r[4].strength for r in rows])
    lines += ["", f"{len(rows)} faces: strength 0 before {np.mean(before == 0):.0%}, after {np.mean(after == 0):.0%}; "
                  f"strength ≥ 0.5 before {np.mean(before >= 0.5):.0%}, after {np.mean(after >= 0.5):.0%}; "
                  f"mean before {before.mean():.2f}, after {after.mean():.2f}."]
    gated = np.array([r[4].strength * NO_REFS_STRENGTH * structure_factor(True, False, r[4].structure) for r in rows])
    lines += ["", f"Without references: {np.sum((after > 0) & (gated == 0))} of the {np.sum(after > 0)} faces the measure "
                  f"would restore are kept by the structure gate; mean strength {gated.mean():.2f}."]
    return "\n".join(lines) + "\n"


def contact_sheet(rows: list, real_lq: Path, path: Path) -> None:
    """Face centres (face pixels, 256 px) with their strengths written on them, for a look."""
    tiles = []
    for src, idx, crop, old, new in rows:
        c = crop if crop.dtype == np.uint8 else np.round(np.clip(crop, 0, 1) * 255).astype(np.uint8)
        s = c.shape[0]
        tile = cv2.cvtColor(cv2.resize(c[s // 8: s - s // 8, s // 8: s - s // 8], (256, 256),
                                       interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
        for k, text in enumerate((f"{src.relative_to(real_lq).as_posix()}#{idx}",
                                  f"before {old.strength:.2f} after {new.strength:.2f}")):
            cv2.putText(tile, text, (3, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 255, 255), 1)
        tiles.append(tile)
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 6)
    cv2.imwrite(str(path), np.vstack([np.hstack(tiles[k:k + 6]) for k in range(0, len(tiles), 6)]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=128, help="the restorer's native resolution")
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS_MD.relative_to(REPO)}")
    ap.add_argument("--sheet", help="also write a contact sheet of the faces with their strengths (PNG)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    real_lq = shared_dir() / "data" / "real_lq"
    if not real_lq.is_dir():
        raise SystemExit(f"{real_lq} not found; set SHARED_DIR to the folder holding data/real_lq")
    t0 = time.perf_counter()
    rows = measure(whole_images(real_lq), args.resolution)
    md = markdown(rows, real_lq, args.resolution, time.perf_counter() - t0)
    print(md)
    if args.write:
        write_text_atomic(RESULTS_MD, md)
        print(f"wrote {RESULTS_MD}", file=sys.stderr)
    if args.sheet:
        contact_sheet(rows, real_lq, Path(args.sheet))
    return 0


if __name__ == "__main__":
    sys.exit(main())

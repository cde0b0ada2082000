#!/usr/bin/env python
"""The v6 programme's curves over all sessions, from the committed session logs.

    python scripts/programme_curves.py [--logs docs/training/programme_v6] [--every 500]

Reads every `sessionN_train_log.jsonl` (train_restorer's log of one session of the main line),
writes `curves.md` (losses averaged over windows of --every steps, the validation rows) and
`curves.png` (losses and validation identity against the global step, a line where each session
starts) next to them. The loss ablations of a session (`sessionN_ablation/NAME/train_log.jsonl`,
each run branching from the main line) get their own validation table in `curves.md`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image, ImageDraw

LOSSES = ("l1", "ssim", "identity", "adversarial", "feature_matching", "disc")
VALIDATION = ("x8_refs4_id", "x8_norefs_id", "x4_refs4_id", "x4_norefs_id", "x8_refs4_psnr")


def read_sessions(folder: Path) -> List[Tuple[int, List[dict]]]:
    """[(session number, log records)] in session order."""
    sessions = []
    for path in folder.glob("session*_train_log.jsonl"):
        match = re.fullmatch(r"session(\d+)_train_log\.jsonl", path.name)
        if match:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            sessions.append((int(match.group(1)), records))
    return sorted(sessions, key=lambda s: s[0])


def read_ablations(folder: Path) -> List[Tuple[int, str, List[dict]]]:
    """[(session number, run name, log records)] of the ablation runs, in session then name order."""
    runs = []
    for path in folder.glob("session*_ablation/*/train_log.jsonl"):
        match = re.fullmatch(r"session(\d+)_ablation", path.parent.parent.name)
        if match:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            runs.append((int(match.group(1)), path.parent.name, records))
    return sorted(runs, key=lambda r: (r[0], r[1]))


def windows(sessions: List[Tuple[int, List[dict]]], every: int) -> List[dict]:
    """Loss means over windows of `every` global steps (a window never spans two sessions)."""
    rows: Dict[Tuple[int, int], dict] = {}
    for number, records in sessions:
        for rec in records:
            if "val" in rec or "l1" not in rec:
                continue
            key = (number, rec["step"] // every)
            row = rows.setdefault(key, {"session": number, "step": (key[1] + 1) * every, "n": 0,
                                        **{k: 0.0 for k in LOSSES}, "lr": rec.get("lr", 0.0)})
            row["n"] += 1
            for k in LOSSES:
                row[k] += float(rec.get(k, 0.0))
    out = []
    for key in sorted(rows):
        row = rows[key]
        out.append({**row, **{k: row[k] / row["n"] for k in LOSSES}})
    return out


def validations(sessions: List[Tuple[int, List[dict]]]) -> List[dict]:
    return [{"session": number, "step": rec["step"], **{k: rec["val"].get(k) for k in VALIDATION}}
            for number, records in sessions for rec in records if "val" in rec]


def markdown(loss_rows: List[dict], val_rows: List[dict], every: int, ablations=()) -> str:
    lines = ["# v6 programme: curves over all sessions", "",
             "Made by `scripts/programme_curves.py` from `session*_train_log.jsonl`. Training losses are",
             f"means over windows of {every} global steps; validation is the run's own (96 samples of the",
             "held-out people, the project's embedder as the identity measure: not the dlib judge).", "",
             "![curves](curves.png)", "", "## Validation", "",
             "| session | step | " + " | ".join(VALIDATION) + " |", "|---|---|" + "---|" * len(VALIDATION)]
    for r in val_rows:
        lines.append(f"| {r['session']} | {r['step']} | "
                     + " | ".join("" if r[k] is None else f"{r[k]:.4f}" for k in VALIDATION) + " |")
    if ablations:
        lines += ["", "## Ablation runs (each branches from the main line; see PROGRAMME_V6.md)", "",
                  "| session | run | step | " + " | ".join(VALIDATION) + " |", "|---|---|---|" + "---|" * len(VALIDATION)]
        for number, name, records in ablations:
            for rec in records:
                if "val" in rec:
                    lines.append(f"| {number} | {name} | {rec['step']} | "
                                 + " | ".join("" if rec["val"].get(k) is None else f"{rec['val'][k]:.4f}"
                                              for k in VALIDATION) + " |")
    lines += ["", "## Training losses", "", "| session | steps to | lr | " + " | ".join(LOSSES) + " |",
              "|---|---|---|" + "---|" * len(LOSSES)]
    for r in loss_rows:
        lines.append(f"| {r['session']} | {r['step']} | {r['lr']:.2e} | "
                     + " | ".join(f"{r[k]:.4f}" for k in LOSSES) + " |")
    return "\n".join(lines) + "\n"


def plot(loss_rows: List[dict], val_rows: List[dict], starts: List[int], path: Path) -> None:
    """Two panels (losses normalised to their first window; validation identity) as a PNG."""
    width, height, pad = 900, 320, 40
    image = Image.new("RGB", (width, 2 * height), "white")
    draw = ImageDraw.Draw(image)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    steps = [r["step"] for r in loss_rows] + [r["step"] for r in val_rows]
    lo, hi = (min(steps), max(steps)) if steps else (0, 1)

    def x_of(step: float) -> float:
        return pad + (width - 2 * pad) * (step - lo) / max(1, hi - lo)

    panels = [("losses / first window", [(k, [(r["step"], r[k] / max(1e-9, loss_rows[0][k])) for r in loss_rows])
                                          for k in LOSSES] if loss_rows else []),
              ("validation identity", [(k, [(r["step"], r[k]) for r in val_rows if r[k] is not None])
                                       for k in VALIDATION if k.endswith("_id")])]
    for p, (title, series) in enumerate(panels):
        top = p * height
        values = [v for _, pts in series for _, v in pts]
        vlo, vhi = (min(values), max(values)) if values else (0.0, 1.0)
        vhi = vhi if vhi > vlo else vlo + 1.0

        def y_of(v: float) -> float:
            return top + height - pad - (height - 2 * pad) * (v - vlo) / (vhi - vlo)

        draw.rectangle([pad, top + pad, width - pad, top + height - pad], outline="black")
        draw.text((pad, top + 10), f"{title}  [{vlo:.3f} .. {vhi:.3f}]  steps {lo}..{hi}", fill="black")
        for s in starts:
            draw.line([x_of(s), top + pad, x_of(s), top + height - pad], fill="#bbbbbb")
        for i, (name, pts) in enumerate(series):
            colour = colours[i % len(colours)]
            if len(pts) > 1:
                draw.line([(x_of(s), y_of(v)) for s, v in pts], fill=colour, width=2)
            for s, v in pts[:1] if len(pts) > 1 else pts:
                draw.ellipse([x_of(s) - 2, y_of(v) - 2, x_of(s) + 2, y_of(v) + 2], fill=colour)
            draw.text((width - pad - 170, top + pad + 5 + 12 * i), name, fill=colour)
    image.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", default=str(Path(__file__).resolve().parent.parent / "docs/training/programme_v6"))
    ap.add_argument("--every", type=int, default=500)
    a = ap.parse_args(argv)
    folder = Path(a.logs)
    sessions = read_sessions(folder)
    if not sessions:
        print(f"no session*_train_log.jsonl in {folder}", file=sys.stderr)
        return 2
    loss_rows, val_rows = windows(sessions, a.every), validations(sessions)
    starts = [min(r["step"] for r in recs) for _, recs in sessions if recs]
    ablations = read_ablations(folder)
    (folder / "curves.md").write_text(markdown(loss_rows, val_rows, a.every, ablations))
    plot(loss_rows, val_rows, starts, folder / "curves.png")
    print(f"{len(sessions)} sessions, {len(ablations)} ablation runs, {len(loss_rows)} windows, {len(val_rows)} validations -> "
          f"{folder / 'curves.md'}, {folder / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""CPU speed of the embedded default restorer (small_default_config, 128 px faces).

Times ms per face at batch 1 and 4, without references (visual prompt only) and with 4 cached
references (visual prompt + reference attention), for the plain restorer and the runner the CLI
and the nodes use (make_runner "auto": upsampling convs at low resolution), plus building the 4
references' K/V once. Loads the shipped weights
(restorer_core/assets/models/default_restorer.safetensors) when present, else random weights
(the timing is the same; the report says which).

    python benchmarks/cpu_speed.py            # print the table
    python benchmarks/cpu_speed.py --write    # also write benchmarks/results/cpu_speed.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from restorer_core.models.config import small_default_config  # noqa: E402
from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.restore.pipeline import make_runner  # noqa: E402
from restorer_core.models.restorer import OneStepRestorer  # noqa: E402

DEFAULT_MODEL = REPO / "restorer_core" / "assets" / "models" / "default_restorer.safetensors"
RESULTS = HERE / "results" / "cpu_speed.md"


def load_default() -> tuple:
    """(restorer, description of where its weights came from)."""
    if DEFAULT_MODEL.is_file():
        from restorer_core.loaders.project_format import load_restorer

        return load_restorer(DEFAULT_MODEL, device="cpu", dtype=torch.float32), f"weights: {DEFAULT_MODEL.name}"
    torch.manual_seed(0)
    model = OneStepRestorer(small_default_config(128)).eval()
    return model, f"RANDOM weights ({DEFAULT_MODEL.relative_to(REPO)} not found; timing is unaffected)"


def median_ms(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def run(warmup: int, iters: int, refs_n: int = 4) -> tuple:
    model, source = load_default()
    res = model.config.resolution
    g = torch.Generator().manual_seed(0)
    faces = torch.rand(4, 3, res, res, generator=g)
    refs = torch.rand(refs_n, 3, res, res, generator=g)
    rows = []
    with torch.no_grad():
        bank_ms = median_ms(lambda: model.encode_references(refs), warmup, iters)
        bank = model.encode_references(refs)
    rows.append(("bank: encode_references", f"{refs_n} refs", "-", bank_ms, "per bank (once per person)"))
    variants = [("restorer.forward", model)]
    variants.append(("speed auto (CLI/nodes default): fused upsampling", None))  # converts the model: last
    for name, runner in variants:
        if runner is None:
            runner = make_runner(model, "auto")
        for with_refs in (False, True):
            for batch in (1, 4):
                kv = bank if with_refs else None

                def call(runner=runner, batch=batch, kv=kv):
                    with torch.no_grad():
                        runner(faces[:batch], kv)
                ms = median_ms(call, warmup, iters)
                rows.append((name, f"{refs_n} cached" if with_refs else "none", batch, ms / batch, ""))
    return rows, source


def markdown(rows: list, source: str) -> str:
    load = ", load average %.1f at the end (other processes share these cores)" % os.getloadavg()[0]
    env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
           f"torch {torch.__version__} ({torch.get_num_threads()} threads), float32, median of the "
           f"timed calls{load}")
    lines = [f"### CPU speed: embedded default restorer (128 px, {source})", "", f"{env}", "",
             "| variant | references | batch | ms/face | note |", "|---|---|---|---|---|"]
    for name, refs, batch, ms, note in rows:
        lines.append(f"| {name} | {refs} | {batch} | {ms:.1f} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(REPO)}")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows, source = run(a.warmup, a.iters)
    md = markdown(rows, source)
    print(md)
    if a.write:
        write_text_atomic(RESULTS, md)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Who holds the Python interpreter lock during one timed run of benchmarks/gpu_pipeline.py
(issue 19): the CLI's threads share one interpreter, so a stage that holds the lock makes the
others wait however many threads there are.

Starts gpu_pipeline.py with `--marks`, attaches py-spy (`pip install py-spy`; it reads the
process's memory, so it needs ptrace rights over it) with --gil when the named run starts and
stops it when that run ends, then sorts the samples (each one the stack of the thread holding the
lock at that moment) into the pipeline's stages by the functions on the stack. Writes the raw
samples and gil_profile.md to --out.

    python benchmarks/gil_profile.py --run "full cli video" --out $OUT/gil -- \\
        benchmarks/gpu_pipeline.py --device cuda --models full --paths cli --frames 480 --out $OUT/gp
    python benchmarks/gil_profile.py --out /tmp/gil -- benchmarks/gpu_pipeline.py --quick --models full --paths cli
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

# (stage, function names that put a sample there): the first stage with a function on the stack
STAGES = (
    ("paste", ("paste_result", "paste_faces", "paste_frame")),
    ("write (encode)", ("save_result", "save_face_crops", "_save_one")),
    ("read (decode)", ("_load_one",)),
    ("detect", ("_detect_batched", "detect_all", "detect_batch")),
    ("locate (align, strength)", ("locate_images", "_measure_ahead")),
    ("restore: identity scores", ("_annotate", "similarity")),
    ("restore: network", ("runner", "replay", "restore_step", "denoise", "encode", "decode")),
    ("restore: rest", ("restore_faces", "finish_images")),
)
_LINE = re.compile(r"^thread \((?P<tid>[^)]*)\): (?P<name>[^;]*);(?P<stack>.*) (?P<count>\d+)$")


def function_names(stack: str) -> set:
    """The function names of a raw stack's frames ('Class.method (file:line)' -> 'method')."""
    return {frame.split(" (")[0].split(".")[-1] for frame in stack.split(";")}


def stage_of(stack: str) -> str:
    names = function_names(stack)
    for stage, functions in STAGES:
        if names.intersection(functions):
            return stage
    return "other"


def summarize(raw: str) -> dict:
    """{"stages": Counter, "threads": Counter, "functions": Counter, "samples": int} of py-spy's raw
    output (one 'thread (id): NAME;frame;...;frame COUNT' line per distinct stack)."""
    stages: Counter = Counter()
    threads: Counter = Counter()
    functions: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        count, stack = int(m["count"]), m["stack"]
        total += count
        stages[stage_of(stack)] += count
        threads[re.sub(r"_\d+$", "", m["name"])] += count
        ours = [f for f in stack.split(";") if "restorer_core/" in f or "benchmarks/" in f]
        if ours:
            functions[ours[-1]] += count  # the innermost frame of this project's code
    return {"stages": stages, "threads": threads, "functions": functions, "samples": total}


def markdown(summary: dict, run: str, rate: int, seconds: float, command: Sequence[str]) -> str:
    n = max(summary["samples"], 1)
    lines = [f"# Interpreter lock during `{run}` ({summary['samples']} samples at {rate}/s over {seconds:.1f} s)",
             "", f"`{' '.join(command)}`; py-spy --gil: each sample is the stack of the thread holding the lock.",
             f"Held {summary['samples'] / max(seconds * rate, 1e-9):.0%} of the time (samples / (seconds x rate)).",
             "", "| stage | share of lock samples |", "|---|---|"]
    lines += [f"| {k} | {v / n:.1%} |" for k, v in summary["stages"].most_common()]
    lines += ["", "| thread | share |", "|---|---|"]
    lines += [f"| {k} | {v / n:.1%} |" for k, v in summary["threads"].most_common()]
    lines += ["", "| innermost project function | share |", "|---|---|"]
    lines += [f"| `{k}` | {v / n:.1%} |" for k, v in summary["functions"].most_common(15)]
    return "\n".join(lines) + "\n"


def wait_for(path: Path, line: str, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and line in path.read_text().splitlines():
            return True
        time.sleep(0.05)
    return path.exists() and line in path.read_text().splitlines()


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: gil_profile.py [--run RUN] [--rate N] --out DIR -- gpu_pipeline.py ARGS", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="full cli video", help="the timed run to sample (gpu_pipeline's marks)")
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    ap.add_argument("--timeout", type=float, default=540.0, help="seconds to wait for the run to start")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv[:cut])
    bench = argv[cut + 1:]
    spy = shutil.which("py-spy")
    if spy is None:
        ap.error("py-spy is not installed: pip install py-spy")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    marks = Path(tempfile.mkdtemp(prefix="gil_marks_")) / "marks.txt"
    command = [sys.executable, *bench, "--marks", str(marks)]
    child = subprocess.Popen(command)
    try:
        if not wait_for(marks, f"start {a.run}", child, a.timeout):
            print(f"the run '{a.run}' did not start (see gpu_pipeline's marks: {marks})", file=sys.stderr)
            return 1
        raw_path = out / "gil_raw.txt"
        t0 = time.monotonic()
        sampler = subprocess.Popen([spy, "record", "--pid", str(child.pid), "--gil", "--threads",
                                    "--nonblocking", "--rate", str(a.rate), "--format", "raw", "--output", str(raw_path)])
        wait_for(marks, f"end {a.run}", child, a.timeout)
        seconds = time.monotonic() - t0
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)
    finally:
        child.wait()
    raw = raw_path.read_text() if raw_path.exists() else ""
    md = markdown(summarize(raw), a.run, a.rate, seconds, command[1:-2])
    (out / "gil_profile.md").write_text(md)
    print(md)
    return 0 if raw else 1


if __name__ == "__main__":
    sys.exit(main())

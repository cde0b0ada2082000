"""One process per GPU for the batch CLI, started by torchrun on one host.

    torchrun --nproc_per_node N -m restorer_core restore INPUT... --out DIR ...

Each process reads WORLD_SIZE / RANK / LOCAL_RANK, uses cuda:LOCAL_RANK (the CPU without CUDA),
restores its share of the inputs, and hands its report to the others; rank 0 writes the one
merged report. Without WORLD_SIZE (or with WORLD_SIZE=1) nothing here does anything.

Outputs are the files and pixels a single-process run writes, because shards are chosen so
that each rank sees exactly the batches a single process would:
  - run_restore batches faces within chunks of `images_per_chunk` consecutive inputs; shards
    are made of whole chunks, so no face lands in a batch of a different size or company
    (GPU and CPU kernels may pick another algorithm for another batch size);
  - inputs with the same file stem may compete for `stem_restored.png`, `_1`, `_2`...; their
    chunks go to the same rank, in input order, so the numbering is the single-process one.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch

# Ranks that finish early wait in the final gather for the slowest one; a failed rank makes
# torchrun stop the others, so a long timeout only covers honest waiting.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(env: Optional[Mapping[str, str]] = None) -> DistContext:
    """The DistContext torchrun's variables describe; single-process when WORLD_SIZE is unset.
    ValueError with the fix when they are inconsistent."""
    env = os.environ if env is None else env
    raw_world = str(env.get("WORLD_SIZE", "")).strip()
    if not raw_world:
        return DistContext()
    try:
        world = int(raw_world)
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers ({exc}); start several "
                         "processes with `torchrun --nproc_per_node N -m restorer_core restore ...`") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun variables WORLD_SIZE={world} RANK={rank} LOCAL_RANK={local}; "
                         "unset them for one process, or start with torchrun")
    if world > 1 and "RANK" not in env:
        raise ValueError("WORLD_SIZE is set but RANK is not; unset WORLD_SIZE for one process, or start "
                         "with torchrun")
    return DistContext(rank, world, local)


def rank_device(requested: str, ctx: DistContext, cuda_devices: Optional[int] = None) -> str:
    """The --device this rank uses: "auto"/"cuda" become cuda:LOCAL_RANK (cpu when there are no
    GPUs); "cpu" stays. Outside torchrun the request is returned untouched. cuda_devices: GPUs
    visible (None: ask torch)."""
    if not ctx.enabled:
        return requested
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = str(requested).strip().lower()
    if name == "cpu":
        return "cpu"
    if name in ("", "auto") and cuda_devices == 0:
        return "cpu"
    if name in ("", "auto", "cuda", f"cuda:{ctx.local_rank}"):
        if ctx.local_rank >= cuda_devices:
            raise ValueError(f"process LOCAL_RANK={ctx.local_rank} needs GPU cuda:{ctx.local_rank} but "
                             f"{cuda_devices} GPU(s) are visible; start torchrun with --nproc_per_node "
                             f"{max(cuda_devices, 1)} or fewer, or use --device cpu")
        return f"cuda:{ctx.local_rank}"
    raise ValueError(f"--device {requested} under torchrun: each process uses its own GPU "
                     "(cuda:LOCAL_RANK); pass --device auto, cuda or cpu, and choose GPUs with "
                     "CUDA_VISIBLE_DEVICES")


def shard_indices(names: Sequence[Any], rank: int, world_size: int, chunk: int) -> list:
    """Indices (ascending) of the inputs `rank` restores.

    The inputs are cut into chunks of `chunk` consecutive items, as run_restore does; chunks
    holding inputs with the same stem (case-insensitive: their output names compete) are
    joined into one unit; units are dealt round-robin in input order. Every index lands on
    exactly one rank; with unique stems and chunk 1 this is names[rank::world_size].
    """
    if world_size < 1 or not 0 <= rank < world_size or chunk < 1:
        raise ValueError(f"bad shard request: rank {rank} of {world_size}, chunk {chunk}")
    n_chunks = (len(names) + chunk - 1) // chunk
    parent = list(range(n_chunks))

    def root(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    first_chunk_of_stem: dict = {}
    for i, name in enumerate(names):
        stem = Path(str(name)).stem.lower()
        c = i // chunk
        if stem in first_chunk_of_stem:
            a, b = root(first_chunk_of_stem[stem]), root(c)
            parent[max(a, b)] = min(a, b)  # a unit is named by its first chunk
        else:
            first_chunk_of_stem[stem] = c
    units = sorted({root(c) for c in range(n_chunks)})
    mine = {u for k, u in enumerate(units) if k % world_size == rank}
    return [i for i in range(len(names)) if root(i // chunk) in mine]


# ----------------------------------------------------------------------------- process group


def start(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (nccl for a CUDA device, gloo otherwise); no-op outside torchrun."""
    if not ctx.enabled or torch.distributed.is_initialized():
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        torch.distributed.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)


def stop(ctx: DistContext) -> None:
    """Leave the process group if start() joined one."""
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        torch.distributed.barrier()


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (say, computing and caching the reference K/V); the others
    run it after rank 0 is done (and find the cache). Every rank must enter the block."""
    if not ctx.enabled:
        yield
        return
    if ctx.is_main:
        try:
            yield
        finally:
            barrier(ctx)
    else:
        barrier(ctx)
        yield


# ----------------------------------------------------------------------------- reports


def merge_reports(parts: Sequence[Any], inputs: Sequence[Any], note: str = "") -> Any:
    """One RunReport from the ranks' reports (rank 0's first): rank 0's settings, model and
    bank; every image once, in input order; the earliest start; status from the images."""
    from ..io.report import RunReport

    main: RunReport = parts[0]
    order = {str(p): i for i, p in enumerate(inputs)}
    images = [im for part in parts for im in part.images]
    images.sort(key=lambda im: order.get(im.input, len(order)))
    notes: list = []
    for line in [n for part in parts for n in part.notes] + ([note] if note else []):
        if line not in notes:
            notes.append(line)
    cache = next((p.reference_cache for p in parts if p.reference_cache is not None), None)
    merged = dataclasses.replace(main, images=images, notes=notes, reference_cache=cache,
                                 started=min(p.started for p in parts))
    merged.finish()
    return merged


def gather_reports(ctx: DistContext, report: Any, inputs: Sequence[Any]) -> Any:
    """Every rank's RunReport merged (see merge_reports), on every rank; the report itself
    outside torchrun."""
    if not ctx.enabled:
        return report
    parts: list = [None] * ctx.world_size
    torch.distributed.all_gather_object(parts, report)  # between this job's own processes
    return merge_reports(parts, inputs, note=f"inputs shared by {ctx.world_size} processes (torchrun)")


def rank_report_path(report_path: Path, ctx: DistContext) -> Path:
    """Where a rank writes its own part of the report when the job is cancelled (no merge then)."""
    from ..io.outputs import free_path

    return free_path(report_path.parent, f"{report_path.stem}.rank{ctx.rank}", report_path.suffix or ".json")

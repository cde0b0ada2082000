"""Device work off the restorer's thread runs on a CUDA stream of its own thread.

On one CUDA stream, kernels run in the order they were queued, whichever thread queued them:
a file thread's paste, or the reader thread's face detection, would wait behind the restorer
batch the main thread queued just before (and its host copy would wait for that whole batch).
Each thread that calls `side_stream` gets one stream of its own per device, made once, so that
work overlaps the restorer's. Inputs come from host memory and results go back to it within
the block (a blocking copy waits for this stream only), so no event ties the streams together.
On the CPU, and on devices without streams, it does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, ContextManager

import torch

_local = threading.local()


def side_stream(device: Any) -> ContextManager:
    """A context in which this thread's kernels for `device` go to its own CUDA stream
    (a no-op context for the CPU and other devices)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cuda" or not torch.cuda.is_available():
        return contextlib.nullcontext()
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    streams = getattr(_local, "streams", None)
    if streams is None:
        streams = _local.streams = {}
    if index not in streams:
        streams[index] = torch.cuda.Stream(device=index)
    return torch.cuda.stream(streams[index])

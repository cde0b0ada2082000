"""A thread-safe detector: one backend instance per thread, so frames are detected side by side.

A backend object is not thread-safe (YuNet keeps the input size of its last call), but two
instances are independent and OpenCV / onnxruntime release the GIL while they run. A
DetectorPool is a FaceDetector whose `detect` runs on the calling thread's own instance, made by
`factory` on the thread's first call; `first` (an instance the caller already made, e.g. to
check the weights) serves the first thread.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from .base import FaceDetector


class DetectorPool:
    """A FaceDetector safe to call from several threads at once; `get()`: the calling thread's
    own backend instance (made once per thread)."""

    thread_safe = True

    def __init__(self, factory: Callable[[], FaceDetector], first: Optional[FaceDetector] = None):
        self.factory = factory
        self._first = first
        self._template = first  # what name / config / repr read, so reading them makes no instance
        self._local = threading.local()
        self._lock = threading.Lock()
        self.made = 0  # instances made by the factory (for tests and reports)

    def get(self) -> Any:
        det = getattr(self._local, "detector", None)
        if det is None:
            with self._lock:
                det, self._first = self._first, None
                if det is None:
                    det = self.factory()
                    self.made += 1
                if self._template is None:
                    self._template = det
            self._local.detector = det
        return det

    def detect(self, rgb):
        return self.get().detect(rgb)

    def _described(self) -> Any:
        return self._template if self._template is not None else self.get()

    @property
    def name(self) -> str:
        return self._described().name

    @property
    def config(self) -> Any:
        return self._described().config

    def __repr__(self) -> str:
        return f"DetectorPool({self._described()!r}, made={self.made})"

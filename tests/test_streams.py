"""restore.streams: each thread's device work goes to a CUDA stream of its own (faked CUDA here)."""

import contextlib
import threading

import torch

from restorer_core.restore import streams


class FakeStream:
    def __init__(self, device=None):
        self.device = device


def fake_cuda(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def stream(s):
        entered.append(s)
        yield

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(streams, "_local", threading.local())
    return entered


def test_cpu_work_stays_on_the_calling_stream(monkeypatch):
    entered = fake_cuda(monkeypatch)
    for device in ("cpu", None, torch.device("cpu")):
        with streams.side_stream(device):
            pass
    assert entered == []


def test_one_stream_per_thread_and_device(monkeypatch):
    entered = fake_cuda(monkeypatch)
    for device in ("cuda", "cuda:0", "cuda:1", "cuda"):
        with streams.side_stream(device):
            pass
    first = entered[:]
    assert first[0] is first[1] is first[3] and first[0].device == 0  # "cuda" is the current device 0
    assert first[2] is not first[0] and first[2].device == 1

    other = []
    thread = threading.Thread(target=lambda: other.append(streams.side_stream("cuda")))
    thread.start()
    thread.join()
    with other[0]:
        pass
    assert entered[-1] is not first[0]  # another thread gets another stream

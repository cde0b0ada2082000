"""The CLI loop reads (and locates faces in) the next chunk and writes the previous one while a\nchunk is restored."""

from __future__ import annotations

import threading
import time

import numpy as np
from PIL import Image

from restorer_core.cli.run import RunSettings, run_restore
from restorer_core.io import imageio
from restorer_core.io.report import RESTORED, ImageRecord
from restorer_core.restore.pipeline import ImageResult, LocatedImages, RestoreOptions


class SlowPipeline:
    """Stands in for FaceRestorePipeline: faces 'located' in 0.1 s, every image 'restored'
    (inverted) in 0.3 s, both logged with the thread they ran on."""

    last_cache_info = None

    def __init__(self, log):
        self.log = log

    def locate_images(self, images, bank, options, names):
        self.log.append(("locate", names[0], threading.current_thread().name, time.perf_counter()))
        time.sleep(0.1)
        return LocatedImages(list(images), [ImageRecord(input=n, status=RESTORED) for n in names], [])

    def finish_images(self, located, bank, options, progress, should_cancel, paste=True):
        name = located.records[0].input
        self.log.append(("restore", name, "start", time.perf_counter()))
        time.sleep(0.3)
        self.log.append(("restore", name, "end", time.perf_counter()))
        results = [ImageResult(im, None, [], rec, pasted=False) for im, rec in zip(located.images, located.records)]
        return [self.paste_result(r, options) for r in results] if paste else results

    def paste_result(self, result, options=None, mask=True):
        """As the pipeline's: the 'paste' (inversion) happens here, once, on the caller's thread."""
        if not result.pasted:
            self.log.append(("paste", result.record.input, threading.current_thread().name, time.perf_counter()))
            result.pixels, result.pasted = 255 - result.pixels, True
            result.mask = np.zeros(result.pixels.shape[:2]) if mask else None
        return result


def test_reading_and_writing_overlap_the_restore(tmp_path, monkeypatch):
    inputs = []
    for i in range(3):
        path = tmp_path / f"frame{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(path)
        inputs.append(path)
    log, threads = [], set()
    load, save = imageio.load_image, imageio.save_image

    def logged_load(path, *a, **k):
        threads.add(threading.current_thread().name)
        log.append(("load", str(path), "start", time.perf_counter()))
        return load(path, *a, **k)

    def logged_save(path, *a, **k):
        log.append(("save", str(path), "start", time.perf_counter()))
        return save(path, *a, **k)

    monkeypatch.setattr(imageio, "load_image", logged_load)
    monkeypatch.setattr(imageio, "save_image", logged_save)
    settings = RunSettings(tmp_path / "out", images_per_chunk=1, show_progress=False, rotate=False, resume=False)
    report = run_restore(inputs, SlowPipeline(log), None, RestoreOptions(), settings)

    assert [im.status for im in report.images] == [RESTORED] * 3
    for im, path in zip(report.images, inputs):
        assert im.input == str(path)
        written = np.asarray(Image.open(im.output))
        assert np.array_equal(written, 255 - np.asarray(Image.open(path)))
    when = {(kind, name, edge): t for kind, name, edge, t in log}
    first, second = str(inputs[0]), str(inputs[1])
    assert when[("load", second, "start")] < when[("restore", first, "end")]  # read ahead
    saved_first = min(t for kind, name, edge, t in log if kind == "save")
    assert saved_first < when[("restore", second, "end")]  # written while the next one restores
    assert all(name.startswith("read") for name in threads)
    located = {name: (thread, t) for kind, name, thread, t in log if kind == "locate"}
    assert sorted(located) == sorted(map(str, inputs))
    assert all(thread.startswith("read") for thread, _ in located.values())  # faces found on the reader
    assert located[second][1] < when[("restore", first, "end")]  # ... ahead of the restore
    pasted = {name: (thread, t) for kind, name, thread, t in log if kind == "paste"}
    assert sorted(pasted) == sorted(map(str, inputs))  # each image pasted once ...
    assert all(thread.startswith("write") for thread, _ in pasted.values())  # ... on the writer, not the restorer
    assert pasted[first][1] < when[("restore", second, "end")]  # while the next image restores


def test_files_of_a_chunk_are_read_and_written_side_by_side_in_order(tmp_path, monkeypatch):
    """On a machine with cores to spare (cpu_workers > 1) a chunk's files are decoded and encoded
    on several threads at once; the report still lists them in input order, and one unreadable
    file is one failed line."""
    import restorer_core.cli.run as run_mod
    from restorer_core.io.report import FAILED

    monkeypatch.setattr(run_mod, "cpu_workers", lambda items: min(items, 4))
    inputs = []
    for i in range(6):
        path = tmp_path / f"frame{i}.png"
        if i == 2:
            path.write_bytes(b"not a png")
        else:
            Image.fromarray(np.full((16, 16, 3), 30 * i, np.uint8)).save(path)
        inputs.append(path)
    busy, peak, lock, names = [0], [0], threading.Lock(), set()
    load, save = imageio.load_image, imageio.save_image

    def counted(fn):
        def call(path, *a, **k):
            with lock:
                busy[0] += 1
                peak[0] = max(peak[0], busy[0])
                names.add(threading.current_thread().name)
            try:
                time.sleep(0.05)
                return fn(path, *a, **k)
            finally:
                with lock:
                    busy[0] -= 1
        return call

    monkeypatch.setattr(imageio, "load_image", counted(load))
    monkeypatch.setattr(imageio, "save_image", counted(save))
    settings = RunSettings(tmp_path / "out", images_per_chunk=4, show_progress=False, rotate=False, resume=False)
    report = run_restore(inputs, SlowPipeline([]), None, RestoreOptions(), settings)

    assert [im.input for im in report.images] == [str(p) for p in inputs]
    assert [im.status for im in report.images] == [RESTORED, RESTORED, FAILED, RESTORED, RESTORED, RESTORED]
    assert report.images[2].error
    for im, path in zip(report.images, inputs):
        if im.status == RESTORED:
            assert np.array_equal(np.asarray(Image.open(im.output)), 255 - np.asarray(Image.open(path)))
    assert peak[0] >= 2 and all(n.startswith("files") for n in names)

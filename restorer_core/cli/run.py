"""Step 4 of `restore`: the per-image loop, in chunks of images whose faces share batches.

Each chunk goes through three named steps: load (resume check, read), restore (the chunk at
once, or image by image when that fails, so one bad image does not sink the rest), save (write
each result under a free name). Reading (decoding, and finding and aligning the faces) runs one
chunk ahead and writing (pasting the faces back, encoding) one chunk behind, each on its own
thread, so that CPU work overlaps the restorer's; on a machine with cores to spare a chunk's files
are decoded, pasted and encoded on several threads (restorer_core.threads decides how many), and
its images located side by side (FaceRestorePipeline.locate_images). One failing image is one
failed report line; the run goes on.
"""

from __future__ import annotations

import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..errors import CancelledError
from ..threads import cpu_workers
from ..io.atomic import remove_stale_temp_files
from ..io.outputs import PreviousOutputs, file_sha256, find_done_output, is_output_of, output_marker
from ..io.report import CANCELLED, DONE, FAILED, ImageRecord, RunReport
from .save import save_face_crops, save_result
from .summary import save_report, warnings_into

if TYPE_CHECKING:
    from ..restore.bank import ReferenceBank
    from ..restore.pipeline import FaceRestorePipeline, RestoreOptions


@dataclass
class RunSettings:
    """What run_restore needs besides the pipeline: where to write and how.

    resume: skip an input whose output an earlier run wrote from the same bytes with the same
    settings (`settings_digest`). rotate: try the other three rotations when no face is found.
    debug: print the traceback of a failing image (the run goes on either way).
    """

    out_dir: Path
    output_format: str = "keep"
    save_faces: bool = False
    report_path: Optional[Path] = None
    images_per_chunk: int = 8
    show_progress: bool = True
    resume: bool = True
    rotate: bool = True
    settings_digest: str = ""
    debug: bool = False


def _progress_bars(total_images: int, enabled: bool):
    from tqdm import tqdm

    images = tqdm(total=total_images, desc="images", unit="img", position=0, disable=not enabled,
                  dynamic_ncols=True)
    faces = tqdm(total=0, desc="faces ", unit="face", position=1, disable=not enabled, dynamic_ncols=True)
    return images, faces


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Run:
    """The state one run_restore call shares between its steps: report, progress, resume data."""

    def __init__(self, inputs: Sequence[Path], pipeline: "FaceRestorePipeline", bank: "Optional[ReferenceBank]",
                 options: "RestoreOptions", settings: RunSettings, report: RunReport,
                 should_cancel: Optional[Callable[[], bool]]):
        self.inputs, self.pipeline, self.bank, self.options = inputs, pipeline, bank, options
        self.settings, self.report, self.should_cancel = settings, report, should_cancel
        report.settings_digest = report.settings_digest or settings.settings_digest
        self.digest = report.settings_digest
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        for folder in (settings.out_dir, settings.out_dir / "faces"):
            for stale in remove_stale_temp_files(folder):
                report.note(f"removed a temp file left by a killed run: {stale.name}")
        self.previous = PreviousOutputs.read(settings.out_dir)
        self.bar_images, self.bar_faces = _progress_bars(len(inputs), settings.show_progress)
        self.faces_before = 0
        self.io: Optional[ThreadPoolExecutor] = None  # threads that read and write files side by side

    def on_progress(self, done: int, total: int) -> None:
        self.bar_faces.total = self.faces_before + total
        self.bar_faces.n = self.faces_before + done
        self.bar_faces.refresh()

    def fail(self, path: Path, exc: BaseException, sha: str = "") -> None:
        if self.settings.debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        self.report.images.append(ImageRecord(str(path), status=FAILED, error=_error_text(exc), input_sha256=sha))
        self.bar_images.update(1)

    def done_before(self, path: Path, sha: str) -> Optional[Path]:
        if not self.settings.resume:
            return None
        return find_done_output(path, sha, self.digest, self.settings.out_dir, self.previous)

    def load(self, chunk: Sequence[Path]) -> list:
        """The chunk's images to restore, as (image, sha256, load seconds); inputs done by an
        earlier run are recorded "done", unreadable ones "failed" (files read side by side on
        self.io, recorded in input order)."""
        loaded = []
        for path, sha, earlier, item, exc in self.map_io(self._load_one, chunk):
            if exc is not None:
                self.fail(path, exc, sha)
            elif earlier is not None:
                self.report.images.append(ImageRecord(
                    str(path), output=str(earlier), status=DONE, input_sha256=sha,
                    note="restored by an earlier run with the same settings; kept (--force redoes it)"))
                self.bar_images.update(1)
            else:
                loaded.append(item)
        return loaded

    def _load_one(self, path: Path) -> tuple:
        """(path, sha256, earlier output or None, (image, sha, seconds) or None, error or None)."""
        from ..io.imageio import load_image

        sha = ""
        try:
            t0 = time.perf_counter()
            sha = file_sha256(path)
            earlier = self.done_before(path, sha)
            if earlier is not None:
                return path, sha, earlier, None, None
            image = load_image(path)
            return path, sha, None, (image, sha, time.perf_counter() - t0), None
        except Exception as exc:  # noqa: BLE001 - one bad file is one failed line
            return path, sha, None, None, exc

    def map_io(self, fn, items) -> list:
        """[fn(x) for x in items] on the run's file threads (self.io), in order."""
        return list(self.io.map(fn, items)) if self.io is not None else [fn(x) for x in items]

    def read(self, chunk: Sequence[Path]) -> tuple:
        """(loaded, located): the chunk loaded, and its faces found and aligned
        (pipeline.locate_images), or located None when that failed (restore does it again, image
        by image, and records what fails). Runs on the reader thread, ahead of the restore."""
        loaded = self.load(chunk)
        if not loaded:
            return loaded, None
        try:
            located = self.pipeline.locate_images([im.pixels for im, _, _ in loaded], self.bank, self.options,
                                                  [str(im.path) for im, _, _ in loaded])
        except Exception:  # noqa: BLE001 - restore redoes it and records the failure
            located = None
        return loaded, located

    def restore_group(self, group: list, located=None) -> list:
        """One pipeline call for the group's images (their faces already located, when given);
        with settings.rotate, an image without a face is tried turned by 90/180/270 degrees."""
        from ..faces.orientation import restore_any_rotation

        pipeline, bank, options, should_cancel = self.pipeline, self.bank, self.options, self.should_cancel
        if located is not None:  # pasted on the file threads, while the next chunk restores (_save_one)
            results = pipeline.finish_images(located, bank, options, self.on_progress, should_cancel, paste=False)
        else:
            results = pipeline.restore_images([im.pixels for im, _, _ in group], bank, options, self.on_progress,
                                              should_cancel, [str(im.path) for im, _, _ in group])
        if not self.settings.rotate:
            return results
        out = []
        for (image, _, _), result in zip(group, results):
            def one(pixels, name=str(image.path)):
                return pipeline.restore_images([pixels], bank, options, None, should_cancel, [name])[0]
            out.append(restore_any_rotation(one, image.pixels, result))
        return out

    def restore(self, loaded: list, located=None) -> Optional[tuple]:
        """(groups, results): the chunk in one group, or image by image when that fails (each
        failing image recorded); None when the chunk's only image failed."""
        groups = [loaded]
        try:
            results = [self.restore_group(loaded, located)]
        except CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            if len(loaded) == 1:
                self.fail(loaded[0][0].path, exc, loaded[0][1])
                return None
            groups, results = [], []  # retry one by one so one bad image does not sink the rest
            for item in loaded:
                try:
                    results.append(self.restore_group([item]))
                    groups.append([item])
                except CancelledError:
                    raise
                except Exception as one_exc:  # noqa: BLE001
                    self.fail(item[0].path, one_exc, item[1])
        return groups, results

    def save(self, groups: list, results: list) -> None:
        """Write each restored image (and its face crops), side by side on self.io, and record
        them in the report in input order."""
        items = [(item, result) for group, group_results in zip(groups, results)
                 for item, result in zip(group, group_results)]
        for record in self.map_io(self._save_one, items):
            self.report.images.append(record)
            self.bar_images.update(1)

    def _save_one(self, item_result: tuple) -> ImageRecord:
        """Write one result under a free name (never over a file) -> its record (failed, with
        the error, when writing failed)."""
        settings, digest = self.settings, self.digest
        (image, sha, load_s), result = item_result
        record = result.record
        record.input_sha256 = sha
        record.add_time("load", load_s)
        try:
            self.pipeline.paste_result(result, self.options, mask=False)  # the CLI writes no mask
            t0 = time.perf_counter()
            earlier = self.done_before(image.path, sha)  # a run beside this one finished it
            if earlier is not None:
                record.status, record.output = DONE, str(earlier)
                record.note = "written meanwhile by another run with the same settings; kept"
            else:
                marker = output_marker(image.path, sha, digest)
                same = (lambda p, path=image.path, sha=sha: settings.resume
                        and is_output_of(p, path, sha, digest))
                record.output = str(save_result(result, image, settings, marker, same))
                if settings.save_faces and result.faces:
                    record.saved_faces = save_face_crops(result, image.path, settings.out_dir / "faces", marker)
            record.add_time("save", time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001
            if settings.debug:
                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            record.status, record.error = FAILED, _error_text(exc)
        return record

    def record_cancelled(self) -> None:
        """Every input without a record yet is "cancelled"."""
        done = {im.input for im in self.report.images}
        for path in list(self.inputs):
            if str(path) not in done:
                self.report.images.append(ImageRecord(str(path), status=CANCELLED))

    def finish(self, status: Optional[str] = None) -> None:
        """Close the report: its status, the reference cache used, images in input order; write it."""
        report = self.report
        report.finish(status)
        info = getattr(self.pipeline, "last_cache_info", None)
        if info is not None:
            report.reference_cache = info.to_dict()
        order = {str(p): i for i, p in enumerate(self.inputs)}  # report images in input order
        report.images.sort(key=lambda im: order.get(im.input, len(order)))
        if self.settings.report_path is not None:
            save_report(report, self.settings)

    def close(self) -> None:
        self.bar_faces.close()
        self.bar_images.close()


def run_restore(inputs: Sequence[Path], pipeline: "FaceRestorePipeline", bank: "Optional[ReferenceBank]",
                options: "RestoreOptions", settings: RunSettings, report: "Optional[RunReport]" = None,
                should_cancel: Optional[Callable[[], bool]] = None) -> "RunReport":
    """Restore files into settings.out_dir, batching faces across up to `images_per_chunk` images.

    A failing image (unreadable, failing to restore or to write, for any reason) is one failed
    line in the report and the run goes on. With settings.resume an input already restored by
    an earlier run (same bytes, same settings: see restorer_core.io.outputs) is recorded as "done"
    and not written again. Returns the RunReport (also written to settings.report_path, or the
    next free name when that appeared meanwhile). Raises CancelledError (after writing the
    report) when should_cancel() turns true; finished images stay, nothing half-written is left.
    """
    run = _Run(inputs, pipeline, bank, options, settings, report or RunReport(), should_cancel)
    pending = [Path(p) for p in inputs]
    chunks = [pending[i:i + settings.images_per_chunk] for i in range(0, len(pending), settings.images_per_chunk)]
    workers = cpu_workers(settings.images_per_chunk)
    try:
        with warnings_into(run.report), ThreadPoolExecutor(1, "read") as reader, \
                ThreadPoolExecutor(1, "write") as writer, ThreadPoolExecutor(workers, "files") as files:
            run.io = files if workers > 1 else None
            _overlapped(run, chunks, reader, writer)
    except (CancelledError, KeyboardInterrupt):
        run.record_cancelled()
        run.finish("cancelled")
        raise
    finally:
        run.close()
    run.finish()
    return run.report


def _overlapped(run: _Run, chunks: list, reader: ThreadPoolExecutor, writer: ThreadPoolExecutor) -> None:
    """Chunk by chunk: the next chunk is read (decoded, faces located) and the previous one
    written (encoded) on their own threads while this one is restored. Leaving
    (also on cancel) waits for the write under way: nothing half-written is left."""
    should_cancel = run.should_cancel
    next_load: Optional[Future] = reader.submit(run.read, chunks[0]) if chunks else None
    saving: Optional[Future] = None
    try:
        for i in range(len(chunks)):
            loaded, located = next_load.result()
            next_load = None
            if should_cancel is not None and should_cancel():
                raise CancelledError("cancelled between images")
            if i + 1 < len(chunks):
                next_load = reader.submit(run.read, chunks[i + 1])
            if not loaded:
                continue
            restored = run.restore(loaded, located)
            if restored is None:
                continue
            if saving is not None:
                saving.result()
            saving = writer.submit(run.save, *restored)
            run.faces_before = run.bar_faces.total or run.faces_before
    finally:
        if next_load is not None:
            next_load.cancel()
        if saving is not None:
            saving.result()

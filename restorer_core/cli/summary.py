"""The run report: library warnings into it, written under a free name, summed up on stderr."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from ..io.outputs import free_path, write_no_clobber
from .usage import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from ..io.report import RunReport
    from .run import RunSettings


@contextlib.contextmanager
def warnings_into(report: "RunReport") -> Iterator[None]:
    """Library warnings (Pillow, torch...) during the block become report notes, not log noise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                parts = Path(str(w.filename)).parts
                source = (parts[parts.index("site-packages") + 1] if "site-packages" in parts
                          else Path(str(w.filename)).stem)
                report.note(f"warning ({source} {w.category.__name__}): {str(w.message).splitlines()[0]}")


def save_report(report: "RunReport", settings: RunSettings) -> None:
    """Write the report; when that fails (disk full, folder removed meanwhile) say so and set
    settings.report_path to None instead of losing the summary to a traceback."""
    try:
        settings.report_path = write_run_report(report, settings.report_path)
    except OSError as exc:
        print(f"error: could not write the report {settings.report_path}: {exc}", file=sys.stderr)
        settings.report_path = None


def write_run_report(report: "RunReport", path: Path) -> Path:
    """Write the report at `path`, or at the next free name (`_1`, `_2`...) when a file of that
    name exists, also one another run wrote meanwhile. Returns where it went."""
    from ..io.report import write_report

    path = Path(path)
    return write_no_clobber(lambda: free_path(path.parent, path.stem, path.suffix or ".json"),
                            lambda p: write_report(report, p))


def kept_reasons(report: "RunReport") -> str:
    """Why the kept faces were kept, short: "already sharp", or counts per reason when they differ."""
    from collections import Counter

    from ..io.report import KEPT
    from ..restore.detail import KEPT_MANUAL, KEPT_SHARP
    from ..restore.identity_gate import KEPT_STRUCTURELESS

    short = {KEPT_SHARP: "already sharp", KEPT_MANUAL: "strength 0",
             KEPT_STRUCTURELESS: "too blurred to restore without references: give --refs"}
    counts = Counter(short.get(f.reason, "identity gate" if f.reason.startswith("identity gate") else f.reason)
                     for im in report.images for f in im.faces if f.status == KEPT)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {why}" for why, n in counts.most_common())


def summarize(report: "RunReport", report_path: Optional[Path]) -> int:
    """Step 5: the per-image summary on stderr; the exit code the report calls for (1 also when
    the report could not be written: report_path None)."""
    totals = report.totals()
    done = f", {totals['images_done_before']} done by an earlier run" if totals["images_done_before"] else ""
    kept = ""
    if totals["faces_kept"]:
        kept = f", {totals['faces_kept']} kept as they were ({kept_reasons(report)})"
    print(f"{totals['images']} image(s): {totals['images_restored']} restored, "
          f"{totals['images_unchanged']} unchanged (no face restored), {totals['images_failed']} failed{done}; "
          f"{totals['faces_restored']} face(s) restored{kept}. Report: {report_path or 'NOT WRITTEN (see above)'}",
          file=sys.stderr)
    for im in report.images:
        if im.status == "failed":
            print(f"  failed: {im.input}: {im.error}", file=sys.stderr)
        elif im.rotation:
            print(f"  {im.input}: faces found with the image turned {im.rotation} degrees", file=sys.stderr)
    if report.skipped_inputs:
        first = report.skipped_inputs[0]
        more = f" and {len(report.skipped_inputs) - 1} more (listed in the report)" if len(report.skipped_inputs) > 1 else ""
        print(f"  not taken as input: {first['input']} ({first['reason']}){more}", file=sys.stderr)
    return EXIT_FAILED if report.status == "failed" or report_path is None else EXIT_OK

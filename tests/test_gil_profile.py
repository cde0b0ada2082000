"""benchmarks/gil_profile.py sorts py-spy's raw samples into the pipeline's stages."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from gil_profile import summarize  # noqa: E402

RAW = """\
thread (0x7f01): MainThread;<module> (gpu_pipeline.py:9);FaceRestorePipeline.restore_faces (restorer_core/restore/pipeline.py:409);FastRunner.__call__ (restorer_core/models/fast.py:90);runner (restorer_core/models/fast.py:70) 30
thread (0x7f01): MainThread;<module> (gpu_pipeline.py:9);FaceRestorePipeline.finish_images (restorer_core/restore/pipeline.py:571);FaceRestorePipeline._annotate (restorer_core/restore/pipeline.py:619) 10
thread (0x7f02): files_0;_Run._save_one (restorer_core/cli/run.py:221);FaceRestorePipeline.paste_result (restorer_core/restore/pipeline.py:596);_binomial_blur_torch (restorer_core/restore/color.py:78) 40
thread (0x7f03): files_1;_Run._save_one (restorer_core/cli/run.py:231);save_result (restorer_core/io/outputs.py:50) 15
thread (0x7f04): read;_Run.read (restorer_core/cli/run.py:150);FaceRestorePipeline.locate_images (restorer_core/restore/pipeline.py:517);FaceRestorePipeline._detect_batched (restorer_core/restore/pipeline.py:500) 5
not a sample line
"""


def test_samples_sorted_into_stages_threads_and_functions():
    s = summarize(RAW)
    assert s["samples"] == 100
    assert s["stages"] == {"restore: network": 30, "restore: identity scores": 10, "paste": 40,
                           "write (encode)": 15, "detect": 5}
    assert s["threads"] == {"MainThread": 40, "files": 55, "read": 5}  # pool threads grouped by name
    assert s["functions"].most_common(1)[0] == ("_binomial_blur_torch (restorer_core/restore/color.py:78)", 40)

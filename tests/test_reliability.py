"""Reliability of the command line with hostile files and faults (issue 11), on small real photos:
bad files are one report line, paths are checked before work, concurrent runs and kills lose
nothing, re-runs resume, outputs keep the photo's metadata, sideways faces are found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from restorer_core.cli import main
from restorer_core.io.imageio import load_image, read_output_marker, save_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESTEP_FACE_RESTORE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def portrait_rgb(real_lq_dir) -> np.ndarray:
    """CodeFormer demo 04.jpg: 225x225, one face."""
    return load_image(real_lq_dir / "codeformer" / "whole_imgs" / "04.jpg").rgb8


def _restore(inputs, out, model, *extra) -> int:
    """The CLI at full strength unless told otherwise: the test portrait is sharp, so automatic
    strength would rightly leave it as it is and hide what these tests look at."""
    strength = () if "--strength" in extra else ("--strength", "1")
    return main(["restore", *map(str, inputs), "--out", str(out), "--model", str(model), "--quiet",
                 *strength, *extra])


def _report(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ONESTEP_FACE_RESTORE_CACHE=str(tmp_path / "cache"))
    return env


def _cli(*args) -> list:
    return [sys.executable, "-m", "restorer_core", *map(str, args)]


def _temp_files(folder: Path) -> list:
    return [p.name for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def _outputs_by_input(folder: Path, stems) -> dict:
    return {s: sorted(p.name for p in folder.iterdir() if p.name.startswith(f"{s}_restored")) for s in stems}


# ----------------------------------------------------------------------------- 1. empty file


def test_zero_byte_image_is_one_failed_line_and_bank_build_rejects_it(portrait_rgb, model_file, real_lq_dir,
                                                                      tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_empty.png").write_bytes(b"")
    save_image(folder / "b_portrait.png", portrait_rgb)
    out = tmp_path / "out"
    assert _restore([folder], out, model_file) == 1
    report = _report(out / "restore_report.json")
    by_name = {Path(im["input"]).name: im for im in report["images"]}
    assert by_name["a_empty.png"]["status"] == "failed" and "empty (0 bytes)" in by_name["a_empty.png"]["error"]
    assert by_name["b_portrait.png"]["status"] == "restored"  # the run went on
    err = capsys.readouterr().err
    assert "Traceback" not in err and "failed: " in err

    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "empty.jpg").write_bytes(b"")
    for src in sorted((real_lq_dir / "lfw_references" / "Michael_Chang").glob("*.jpg"))[:2]:
        (refs / src.name).write_bytes(src.read_bytes())
    bank = tmp_path / "bank.safetensors"
    assert main(["bank", "build", str(refs), "--out", str(bank), "--align-size", "96"]) == 0
    printed = capsys.readouterr().out
    assert "rejected" in printed and "empty.jpg" in printed and "empty (0 bytes)" in printed
    assert bank.is_file()


# ----------------------------------------------------------------------------- 2. paths checked first


def test_unwritable_paths_are_refused_before_any_work(portrait_rgb, model_file, tmp_path, monkeypatch, capsys):
    import restorer_core.restore.bank as bank_module
    import restorer_core.model_zoo as zoo

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the paths were checked")

    monkeypatch.setattr(zoo, "load_any_restorer", no_work)
    monkeypatch.setattr(bank_module, "build_bank", no_work)
    src = save_image(tmp_path / "portrait.png", portrait_rgb)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (["--out", str(a_file / "out")], "is a file"),                                   # output folder
        (["--out", str(tmp_path / "o1"), "--report", str(a_file / "r.json")], "report folder"),
        (["--out", str(tmp_path / "o2"), "--report", "/proc/restore_report.json"], "not writable"),
        (["--out", str(tmp_path / "o3"), "--cache-dir", str(a_file / "kv")], "--cache-dir"),
    ]
    for extra, message in cases:
        code = main(["restore", str(src), "--model", str(model_file), "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (extra, err)
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))
    assert main(["bank", "build", str(src), "--out", str(a_file / "b.safetensors")]) == 2
    assert "bank folder" in capsys.readouterr().err


def test_report_that_cannot_be_written_after_the_work_still_gives_the_summary(portrait_rgb, model_file,
                                                                            tmp_path, monkeypatch, capsys):
    import restorer_core.io.report as report_module

    def disk_full(report, path, overwrite=False):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "write_report", disk_full)
    src = save_image(tmp_path / "portrait.png", portrait_rgb)
    out = tmp_path / "out"
    assert _restore([src], out, model_file) == 1
    err = capsys.readouterr().err
    assert "could not write the report" in err and "No space left" in err and "Traceback" not in err
    assert "1 restored" in err and "NOT WRITTEN" in err  # the summary is still shown
    assert (out / "portrait_restored.png").is_file()


# ----------------------------------------------------------------------------- 3. concurrent runs


def test_two_runs_into_one_folder_at_once_lose_nothing_and_write_no_duplicates(portrait_rgb, model_file,
                                                                               tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    stems = ["p0", "p1", "p2"]
    for k, stem in enumerate(stems):
        save_image(folder / f"{stem}.png", np.ascontiguousarray(np.roll(portrait_rgb, 3 * k, axis=1)))
    out = tmp_path / "out"
    cmd = _cli("restore", folder, "--out", out, "--model", model_file, "--batch-size", "1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    for _, err in results:  # not a terminal: no progress-bar escapes, no raw warnings
        assert "\x1b[" not in err and "Warning" not in err and "Traceback" not in err
    assert _outputs_by_input(out, stems) == {s: [f"{s}_restored.png"] for s in stems}
    reports = sorted(p.name for p in out.glob("restore_report*.json"))
    assert reports == ["restore_report.json", "restore_report_1.json"]
    for name in reports:
        assert _report(out / name)["status"] == "ok"
    assert not _temp_files(out)


def test_second_bank_build_to_one_file_keeps_the_first(real_lq_dir, tmp_path, monkeypatch, capsys):
    import restorer_core.restore.bank as bank_module

    out = tmp_path / "person.safetensors"
    real_build = bank_module.build_bank

    def build_while_another_run_finishes(*args, **kwargs):
        bank = real_build(*args, **kwargs)
        out.write_bytes(b"the other run's bank")  # it saved first
        return bank

    monkeypatch.setattr(bank_module, "build_bank", build_while_another_run_finishes)
    src = real_lq_dir / "lfw_references" / "Jesse_Ventura"
    assert main(["bank", "build", str(src), "--out", str(out), "--align-size", "96"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "nothing was replaced" in err and "Traceback" not in err
    assert out.read_bytes() == b"the other run's bank"
    assert not _temp_files(tmp_path)


def test_report_name_taken_meanwhile_gets_a_fresh_name(portrait_rgb, model_file, tmp_path, monkeypatch):
    from restorer_core.restore.pipeline import FaceRestorePipeline

    out = tmp_path / "out"
    real = FaceRestorePipeline.finish_images

    def restore_while_another_run_reports(self, *args, **kwargs):
        if not (out / "restore_report.json").exists():
            (out / "restore_report.json").write_text('{"other": "run"}')
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FaceRestorePipeline, "finish_images", restore_while_another_run_reports)
    src = save_image(tmp_path / "portrait.png", portrait_rgb)
    assert _restore([src], out, model_file) == 0
    assert _report(out / "restore_report.json") == {"other": "run"}
    assert _report(out / "restore_report_1.json")["images"][0]["status"] == "restored"


# ----------------------------------------------------------------------------- 4. resume


def test_rerun_resumes_never_restores_its_outputs_and_ignores_a_stray_file(portrait_rgb, model_file, tmp_path,
                                                                         monkeypatch):
    import restorer_core.model_zoo as zoo

    folder = tmp_path / "photos"
    folder.mkdir()
    save_image(folder / "face.png", portrait_rgb)
    Image.fromarray(portrait_rgb).save(folder / "face2.jpg", quality=90)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(folder / "noface.jpg")
    (folder / "junk_restored.png").write_bytes(b"not an image at all")
    stems = ["face", "face2", "noface"]

    assert _restore([folder], folder, model_file) == 0  # output folder = input folder
    first = _outputs_by_input(folder, stems)
    assert first == {"face": ["face_restored.png"], "face2": ["face2_restored.jpg"],
                     "noface": ["noface_restored.jpg"]}
    report = _report(folder / "restore_report.json")
    assert [im["status"] for im in report["images"]] == ["restored", "restored", "unchanged"]
    assert [s["input"] for s in report["skipped_inputs"]] == [str(folder / "junk_restored.png")]
    marker = read_output_marker(folder / "face_restored.png")
    assert marker["input"] == "face.png" and marker["settings"] == report["settings_digest"]

    from restorer_core.cli.inputs import collect_inputs

    left_out: list = []  # a shell glob (photos/*) names the outputs one by one: still never inputs
    globbed = [str(p) for p in sorted(folder.iterdir()) if p.suffix != ".json"]
    (folder / "restore_report.json").rename(folder / "report.bak")  # as after a kill -9: no report
    try:
        assert [p.name for p in collect_inputs(globbed, left_out)] == ["face.png", "face2.jpg", "noface.jpg"]
    finally:
        (folder / "report.bak").rename(folder / "restore_report.json")
    reasons = {Path(s["input"]).name: s["reason"] for s in left_out}
    assert reasons == {"face_restored.png": "an output of an earlier run (marker in the file)",
                       "face2_restored.jpg": "an output of an earlier run (marker in the file)",
                       "noface_restored.jpg": "an unchanged copy of noface.jpg written by an earlier run",
                       "junk_restored.png": "named like an output of this tool but not an image"}
    files_before = sorted(p.name for p in folder.iterdir())
    with monkeypatch.context() as m:  # the same command again: nothing to do, no model loaded for it
        m.setattr(zoo, "load_any_restorer", lambda *a, **k: pytest.fail("model loaded with nothing to do"))
        assert _restore([folder], folder, model_file) == 0
    again = _report(folder / "restore_report_1.json")
    assert [im["status"] for im in again["images"]] == ["done", "done", "done"]
    assert [Path(im["output"]).name for im in again["images"]] == [
        "face_restored.png", "face2_restored.jpg", "noface_restored.jpg"]
    skipped = {Path(s["input"]).name for s in again["skipped_inputs"]}
    assert skipped == {"face_restored.png", "face2_restored.jpg", "noface_restored.jpg", "junk_restored.png"}
    assert sorted(p.name for p in folder.iterdir()) == sorted(files_before + ["restore_report_1.json"])

    os.utime(model_file)  # the model file replaced (same name): new settings, new outputs
    assert _restore([folder / "face.png"], folder, model_file) == 0
    assert _outputs_by_input(folder, ["face"])["face"] == ["face_restored.png", "face_restored_1.png"]
    assert _restore([folder], folder, model_file, "--strength", "0.5") == 0  # other settings: new outputs
    assert _outputs_by_input(folder, ["face"])["face"] == [f"face_restored{s}.png" for s in ("", "_1", "_2")]
    assert _restore([folder / "face.png"], folder, model_file, "--force") == 0  # redo on request
    assert _outputs_by_input(folder, ["face"])["face"] == [f"face_restored{s}.png" for s in ("", "_1", "_2", "_3")]
    assert not [p for p in folder.iterdir() if "_restored_restored" in p.name]


def test_killed_run_resumed_ends_complete_without_duplicates_or_temp_files(portrait_rgb, model_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    stems = [f"img{k}" for k in range(5)]
    for k, stem in enumerate(stems):
        save_image(folder / f"{stem}.png", np.ascontiguousarray(np.roll(portrait_rgb, 2 * k, axis=0)))
    out = tmp_path / "out"
    # strength 1: every image goes through the restorer (auto would keep this sharp portrait as it is)
    cmd = _cli("restore", folder, "--out", out, "--model", model_file, "--batch-size", "1", "--strength", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp_path))
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "img1_restored.png").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_at_kill = [s for s in stems if (out / f"{s}_restored.png").exists()]
    temps_at_kill = _temp_files(out)  # a kill mid-write leaves one: fresh, so it stays (removed when old)
    assert 2 <= len(done_at_kill) < len(stems)  # killed in the middle of the folder
    assert not (out / "restore_report.json").exists()
    stale = out / ".img9_restored.png.abcd1234.onestep.tmp"  # left by an earlier kill -9, long ago
    stale.write_bytes(b"half an image")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = out / ".img8_restored.png.efgh5678.onestep.tmp"  # a live writer's: left alone
    fresh.write_bytes(b"being written")

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _outputs_by_input(out, stems) == {s: [f"{s}_restored.png"] for s in stems}
    report = _report(out / "restore_report.json")
    statuses = {Path(im["input"]).stem: im["status"] for im in report["images"]}
    assert {s for s, st in statuses.items() if st == "done"} >= set(done_at_kill[:-1])
    assert set(statuses.values()) <= {"done", "restored"}
    assert not stale.exists() and fresh.exists()
    assert sorted(_temp_files(out)) == sorted([fresh.name] + [n for n in temps_at_kill if n != stale.name])
    assert any("temp file left by a killed run" in n for n in report["notes"])


# ----------------------------------------------------------------------------- 5. metadata


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"            # Make
    exif[0x0132] = "2020:05:06 07:08:09"  # DateTime
    exif[0x0112] = orientation
    return exif


def test_outputs_keep_icc_exif_and_the_jpeg_quality(portrait_rgb, model_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    icc = _srgb_icc()
    # stored turned by 90 degrees clockwise with orientation 8 ("rotate 270 CW to view"): upright on loading
    stored = np.ascontiguousarray(np.rot90(portrait_rgb, k=-1))
    Image.fromarray(stored).save(folder / "cam.jpg", quality=72, icc_profile=icc, exif=_exif(8))
    png = Image.fromarray(portrait_rgb)
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_text("Author", "A. Person")
    png.save(folder / "scan.png", icc_profile=icc, exif=_exif(1), pnginfo=info)
    out = tmp_path / "out"
    assert _restore([folder], out, model_file, "--no-rotate") == 0
    report = _report(out / "restore_report.json")
    assert [im["status"] for im in report["images"]] == ["restored", "restored"]

    src, res = Image.open(folder / "cam.jpg"), Image.open(out / "cam_restored.jpg")
    assert res.info.get("icc_profile") == icc
    exif = res.getexif()
    assert exif[0x010F] == "TestCam" and exif[0x0132] == "2020:05:06 07:08:09" and exif[0x0112] == 1
    assert res.quantization == src.quantization  # the input's own tables: quality 72, not 95
    assert res.size == (portrait_rgb.shape[1], portrait_rgb.shape[0])  # upright pixels, orientation 1

    res_png = Image.open(out / "scan_restored.png")
    assert res_png.info.get("icc_profile") == icc and res_png.text.get("Author") == "A. Person"
    assert res_png.getexif()[0x010F] == "TestCam"
    assert read_output_marker(out / "scan_restored.png")["input"] == "scan.png"


# ----------------------------------------------------------------------------- 6. orientation


def test_sideways_face_found_by_trying_rotations_and_output_keeps_orientation(portrait_rgb, model_file,
                                                                              tmp_path, yunet):
    sideways = np.ascontiguousarray(np.rot90(portrait_rgb, k=3))  # YuNet is not confident of a face this way
    assert all(f.score < 0.7 for f in yunet.detect(sideways))
    src = save_image(tmp_path / "scan.png", sideways)
    out = tmp_path / "out"
    assert _restore([src], out, model_file, "--strength", "1") == 0  # a sharp portrait: auto would keep it
    image = _report(out / "restore_report.json")["images"][0]
    assert image["status"] == "restored" and image["rotation"] == 90 and image["faces_restored"] == 1
    result = load_image(out / "scan_restored.png").pixels
    assert result.shape == sideways.shape and not np.array_equal(result, sideways)
    x0, y0, x1, y1 = image["faces"][0]["box"]  # the box is in the input's own (sideways) frame
    assert 0 <= x0 < x1 <= sideways.shape[1] and 0 <= y0 < y1 <= sideways.shape[0]
    changed = np.argwhere(np.any(result != sideways, axis=2))
    cy, cx = changed.mean(axis=0)
    assert x0 <= cx <= x1 and y0 <= cy <= y1  # the restored pixels are where the report says the face is

    off = tmp_path / "off"
    assert _restore([src], off, model_file, "--no-rotate", "--strength", "1") == 0
    image = _report(off / "restore_report.json")["images"][0]
    assert image["rotation"] == 0  # only the (unconfident) sideways detection, if any
    assert all(f["score"] < 0.7 for f in image["faces"])


def test_box_to_original_inverts_each_rotation():
    from restorer_core.faces.orientation import box_to_original, rotate

    image = np.zeros((30, 50), np.uint8)
    image[5:9, 20:27] = 1  # rows 5..8, cols 20..26 -> box [20, 5, 27, 9]
    for degrees in (90, 180, 270):
        turned = rotate(image, degrees)
        ys, xs = np.nonzero(turned)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert box_to_original(box, degrees, turned.shape) == [20, 5, 27, 9]


# ----------------------------------------------------------------------------- 7. smaller cases


def test_random_bytes_checkpoint_gets_the_right_message(portrait_rgb, tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    src = save_image(tmp_path / "p.png", portrait_rgb)
    assert main(["restore", str(src), "--out", str(tmp_path / "out"), "--model", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a torch checkpoint" in err and "Python objects" not in err


def test_convert_creates_a_missing_output_folder(tmp_path):
    import torch

    from official_fixtures import build_instantrestore, tiny_config
    from restorer_core.loaders.convert import convert_instantrestore
    from restorer_core.loaders.project_format import load_restorer

    fx = build_instantrestore(tmp_path / "final_model_ckpt.pt", ref_lora_rank=4)
    target = tmp_path / "new" / "folder" / "ir.safetensors"
    assert convert_instantrestore(fx.path, target, dtype=torch.float32, config=tiny_config()) == target
    assert load_restorer(target) is not None


def test_animated_gif_is_refused_with_a_reason(portrait_rgb, model_file, tmp_path):
    frames = [Image.fromarray(portrait_rgb), Image.fromarray(255 - portrait_rgb)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = tmp_path / "out"
    assert _restore([gif], out, model_file) == 1
    image = _report(out / "restore_report.json")["images"][0]
    assert image["status"] == "failed" and "2 frames" in image["error"] and "ffmpeg" in image["error"]
    assert not list(out.glob("anim_restored*"))


def test_grey_photo_stored_as_rgb_stays_grey(portrait_rgb, model_file, tmp_path):
    grey = np.asarray(Image.fromarray(portrait_rgb).convert("L").convert("RGB"))
    src = save_image(tmp_path / "grey.png", grey)
    out = tmp_path / "out"
    assert _restore([src], out, model_file) == 0
    assert _report(out / "restore_report.json")["images"][0]["faces_restored"] == 1
    result = load_image(out / "grey_restored.png").pixels
    assert result.ndim == 3 and not np.array_equal(result, grey)
    assert np.array_equal(result[..., 0], result[..., 1]) and np.array_equal(result[..., 1], result[..., 2])


def test_library_warnings_go_to_the_report_not_the_log(portrait_rgb, model_file, tmp_path, capsys):
    broken_exif = (b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x0f\x01\x02\x00\x64\x00\x00\x00"
                   b"\x40\x00\x00\x00\x00\x00\x00\x00")  # a Make tag pointing past the end
    src = tmp_path / "odd.jpg"
    Image.fromarray(portrait_rgb).save(src, exif=broken_exif)
    out = tmp_path / "out"
    assert _restore([src], out, model_file) == 0
    err = capsys.readouterr().err
    assert "Warning" not in err and "Skipping tag" not in err
    notes = _report(out / "restore_report.json")["notes"]
    assert any("Skipping tag" in n and n.startswith("warning (PIL") for n in notes)


# ----------------------------------------------------------------------------- 8. shared data in CI


def test_missing_shared_data_fails_under_ci_and_is_announced_otherwise(tmp_path):
    env = dict(os.environ, SHARED_DIR=str(tmp_path / "no_shared"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("CI", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_detect.py")]
    local = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert local.returncode == 0, local.stdout[-2000:]
    assert "test(s) needing shared data: shared data folder not found" in local.stdout
    ci = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, CI="true"), cwd=str(tmp_path),
                        timeout=300)
    assert ci.returncode != 0 and "CI=true" in ci.stdout

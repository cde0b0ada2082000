"""Command line and model zoo: real photos in, restored files, reports and exit codes out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from restorer_core.cli import main
from restorer_core.cli.run import RunSettings, run_restore
from restorer_core.cli.save import output_suffix
from restorer_core.errors import CancelledError, CheckpointError, ModelNotFoundError

REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def photos(real_lq_dir, tmp_path_factory) -> dict:
    """PNG copies of real photos (a downscaled group photo, a one-face portrait) and a faceless JPEG."""
    from restorer_core.io.imageio import load_image, save_image

    folder = tmp_path_factory.mktemp("photos")
    group = load_image(real_lq_dir / "gfpgan" / "whole_imgs" / "10045.png").rgb8
    group = cv2.resize(group, (group.shape[1] // 2, group.shape[0] // 2), interpolation=cv2.INTER_AREA)
    portrait = load_image(real_lq_dir / "codeformer" / "whole_imgs" / "04.jpg").rgb8
    rng = np.random.default_rng(0)
    noface = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3)).astype(np.uint8), (9, 9), 3)
    return {name: save_image(folder / f"{name}.{ext}", px)
            for name, ext, px in (("group", "png", group), ("portrait", "png", portrait), ("noface", "jpg", noface))}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESTEP_FACE_RESTORE_CACHE", str(tmp_path / "cache"))


def _read(path) -> np.ndarray:
    from restorer_core.io.imageio import load_image

    return load_image(path).pixels


def _restore(inputs, out, model, *extra) -> int:
    return main(["restore", *map(str, inputs), "--out", str(out), "--model", str(model), "--quiet", *extra])


def _far_from_faces(shape, faces, factor=2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    far = np.ones(shape[:2], bool)
    for f in faces:
        x0, y0, x1, y1 = f["box"]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        far &= np.hypot(xx - cx, yy - cy) > factor * f["size"]
    return far


# ----------------------------------------------------------------------------- restore


def test_restore_group_photo_with_and_without_bank(photos, model_file, real_lq_dir, tmp_path, yunet):
    src = photos["group"]
    original = _read(src)
    expected_faces = len(yunet.detect(original))
    outputs = {}
    for name, extra in (("bank", ["--refs", str(real_lq_dir / "lfw_references" / "Eliane_Karp")]),
                        ("nobank", [])):
        out, report_path = tmp_path / name, tmp_path / f"{name}.json"
        assert _restore([src], out, model_file, "--report", str(report_path), "--batch-size", "3", "--strength", "1",
                        *extra) == 0
        produced = out / "group_restored.png"
        assert produced.is_file()
        result = _read(produced)
        assert result.shape == original.shape and result.dtype == original.dtype
        report = json.loads(report_path.read_text())
        image = report["images"][0]
        assert report["status"] == "ok" and image["output"] == str(produced)
        assert image["faces_found"] == expected_faces == image["faces_restored"] >= 3
        assert report["totals"]["faces_restored"] == expected_faces
        far = _far_from_faces(original.shape, image["faces"])
        assert far.mean() > 0.3
        assert np.array_equal(result[far], original[far])
        for f in image["faces"]:
            x0, y0, x1, y1 = (int(round(v)) for v in f["box"])
            inner = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
            assert np.abs(result[inner].astype(int) - original[inner].astype(int)).max() > 0
        outputs[name] = (result, report)
    assert outputs["bank"][1]["bank"]["references"] and outputs["nobank"][1]["bank"] is None
    assert outputs["bank"][1]["reference_cache"]["status"] == "miss"
    assert not np.array_equal(outputs["bank"][0], outputs["nobank"][0])  # references change the faces


def test_empty_reference_folder_fails_before_writing(photos, model_file, tmp_path, capsys):
    empty = tmp_path / "refs"
    empty.mkdir()
    out = tmp_path / "out"
    code = _restore([photos["portrait"]], out, model_file, "--refs", str(empty))
    assert code == 2
    assert "no reference images" in capsys.readouterr().err
    assert not out.exists()
    # the same through `python -m restorer_core`
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "restorer_core", "restore", str(photos["portrait"]), "--out",
                           str(out), "--refs", str(empty), "--model", str(model_file)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 2 and "no reference images" in proc.stderr
    assert not out.exists()


def test_image_without_face_is_copied_through(photos, model_file, tmp_path):
    out = tmp_path / "out"
    assert _restore([photos["noface"]], out, model_file, "--report", str(tmp_path / "r.json")) == 0
    copied = out / "noface_restored.jpg"
    assert copied.read_bytes() == photos["noface"].read_bytes()  # not re-encoded
    image = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert image["status"] == "unchanged" and image["faces_found"] == 0 and "no face" in image["note"]


def test_outputs_never_overwrite(photos, model_file, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    src = folder / "portrait.png"
    src.write_bytes(photos["portrait"].read_bytes())
    users = folder / "portrait_restored.png"
    users.write_bytes(b"the user's own file")
    before_src = src.read_bytes()
    assert _restore([src], folder, model_file) == 0   # outputs into the input's own folder
    assert _restore([folder / "portrait.png"], folder, model_file, "--force") == 0  # redo: a new name
    assert src.read_bytes() == before_src
    assert users.read_bytes() == b"the user's own file"
    first, second = folder / "portrait_restored_1.png", folder / "portrait_restored_2.png"
    assert first.is_file() and second.is_file()
    assert np.array_equal(_read(first), _read(second))  # same input, same seed: same result
    from restorer_core.io.atomic import default_file_mode

    for made in (first, second, folder / "restore_report.json"):  # not the temp files' 0o600
        assert made.stat().st_mode & 0o777 == default_file_mode()
    reports = sorted(p.name for p in folder.glob("restore_report*.json"))
    assert reports == ["restore_report.json", "restore_report_1.json"]
    assert not list(folder.glob(".*tmp"))


def test_failed_image_gives_exit_code_1_and_others_still_written(photos, model_file, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    assert _restore([broken, photos["portrait"]], out, model_file, "--report", str(tmp_path / "r.json"),
                    "--strength", "1") == 1  # restored (auto would keep this sharp face as it is)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "failed"
    statuses = {Path(im["input"]).name: im["status"] for im in report["images"]}
    assert statuses == {"broken.png": "failed", "portrait.png": "restored"}
    assert (out / "portrait_restored.png").is_file() and not (out / "broken_restored.png").exists()


def test_cancel_mid_run_leaves_no_partial_output(photos, model_file, tmp_path):
    from restorer_core.model_zoo import load_any_restorer
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    pipeline = FaceRestorePipeline(load_any_restorer(model_file))
    out = tmp_path / "out"
    out.mkdir()
    calls = []

    def should_cancel() -> bool:
        # asked between chunks and before each batch: portrait (2 calls), then the group photo's
        # chunk start and first batch; the 5th call comes before its second batch
        calls.append(1)
        return len(calls) >= 5

    settings = RunSettings(out, report_path=tmp_path / "r.json", images_per_chunk=1, show_progress=False)
    with pytest.raises(CancelledError):
        run_restore([photos["portrait"], photos["group"]], pipeline, None, RestoreOptions(batch_size=1, strength=1.0),
                    settings, should_cancel=should_cancel)
    assert sorted(p.name for p in out.iterdir()) == ["portrait_restored.png"]  # no partial group output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "cancelled"
    assert [im["status"] for im in report["images"]] == ["restored", "cancelled"]


def test_similar_selection_without_identity_weights_is_a_usage_error(photos, model_file, real_lq_dir,
                                                                      tmp_path, monkeypatch, capsys):
    import restorer_core.faces.identity as identity

    monkeypatch.setattr(identity, "DEFAULT_EMBEDDER_PATH", tmp_path / "missing.safetensors")
    out = tmp_path / "out"
    refs = real_lq_dir / "lfw_references" / "Jesse_Ventura"
    assert _restore([photos["portrait"]], out, model_file, "--refs", str(refs), "--faces", "similar") == 2
    assert "identity embedder" in capsys.readouterr().err and not out.exists()
    assert _restore([photos["portrait"]], out, model_file, "--faces", "biggest") == 2
    assert _restore([photos["portrait"]], out, model_file, "--mode", "references") == 2
    assert not out.exists()


def test_face_selection_by_index(photos, model_file, tmp_path):
    out = tmp_path / "out"
    assert _restore([photos["group"]], out, model_file, "--faces", "index:1", "--save-faces",
                    "--report", str(tmp_path / "r.json")) == 0
    image = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert image["faces_restored"] == 1
    assert [f["index"] for f in image["faces"] if f["status"] == "restored"] == [1]
    assert image["faces_skipped"] == image["faces_found"] - 1
    saved = sorted(p.name for p in (out / "faces").iterdir())
    assert saved == ["group_face1_input.png", "group_face1_restored.png"]
    assert sorted(image["saved_faces"]) == [str(out / "faces" / n) for n in saved]
    crop_in, crop_out = _read(out / "faces" / saved[0]), _read(out / "faces" / saved[1])
    assert crop_in.shape == crop_out.shape == (512, 512, 3) and not np.array_equal(crop_in, crop_out)


# ----------------------------------------------------------------------------- bank commands


def test_bank_build_info_and_cache_next_to_bank(photos, model_file, real_lq_dir, tmp_path, capsys):
    from restorer_core.restore.bank import load_bank

    bank_file = tmp_path / "chang.safetensors"
    src = real_lq_dir / "lfw_references" / "Michael_Chang"
    assert main(["bank", "build", str(src), "--out", str(bank_file), "--align-size", "96"]) == 0
    bank = load_bank(bank_file)
    photos_in = len(list(src.glob("*.jpg")))
    assert len(bank) + len(bank.rejected) == photos_in and len(bank) >= 2
    before = bank_file.read_bytes()
    assert main(["bank", "build", str(src), "--out", str(bank_file)]) == 2  # never overwritten
    assert bank_file.read_bytes() == before
    capsys.readouterr()
    assert main(["bank", "info", str(bank_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["references"]) == len(bank) and info["hash"] == bank.bank_hash()
    statuses = []
    for run in range(2):
        report = tmp_path / f"r{run}.json"
        assert _restore([photos["portrait"]], tmp_path / "out", model_file, "--refs", str(bank_file), "--max-refs",
                        "2", "--report", str(report), "--force") == 0
        statuses.append(json.loads(report.read_text())["reference_cache"])
    assert [s["status"] for s in statuses] == ["miss", "hit"]
    assert Path(statuses[0]["path"]).parent == Path(str(bank_file) + ".kvcache")
    restored = sorted((tmp_path / "out").glob("portrait_restored*.png"))
    assert len(restored) == 2 and np.array_equal(_read(restored[0]), _read(restored[1]))


# ----------------------------------------------------------------------------- helpers and model zoo


def test_output_suffix_keeps_format_where_it_can():
    assert output_suffix(Path("a.jpg"), "keep", 8, False) == ".jpg"
    assert output_suffix(Path("a.jpg"), "keep", 16, False) == ".png"
    assert output_suffix(Path("a.jpg"), "keep", 8, True) == ".png"
    assert output_suffix(Path("a.webp"), "keep", 8, True) == ".webp"
    assert output_suffix(Path("a.tif"), "keep", 16, True) == ".tif"
    assert output_suffix(Path("a.gif"), "keep", 8, False) == ".png"
    assert output_suffix(Path("a.png"), "jpg", 8, False) == ".jpg"


def test_model_zoo_dispatch_and_errors(model_file, tmp_path, monkeypatch):
    import restorer_core.model_zoo as zoo
    from safetensors.torch import save_file

    model = zoo.load_any_restorer(model_file)
    from restorer_core.loaders.project_format import read_metadata

    assert model.weight_hash() == read_metadata(model_file)["weights_sha256"]
    assert zoo.describe_model(model)["kind"] == "project"
    with pytest.raises(ModelNotFoundError):
        zoo.load_any_restorer(tmp_path / "nope.safetensors")
    monkeypatch.setattr(zoo, "DEFAULT_MODEL_PATH", tmp_path / "default_restorer.safetensors")
    with pytest.raises(ModelNotFoundError, match="--model"):
        zoo.load_any_restorer("default")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="convert"):
        zoo.load_any_restorer(plain)
    with pytest.raises(CheckpointError, match="OSDFace"):
        zoo.load_any_restorer(tmp_path)  # a folder without OSDFace files
    osd = tmp_path / "osdface"
    osd.mkdir()
    (osd / "pytorch_lora_weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="--base"):
        zoo.load_any_restorer(osd, models_dir=tmp_path / "models")
    with pytest.raises(ModelNotFoundError, match="final_model_ckpt.pt"):
        zoo.load_any_restorer("instantrestore", models_dir=tmp_path / "models")  # by name, offline
    assert zoo.pick_device_dtype("cpu") == (torch.device("cpu"), torch.float32)
    assert zoo.pick_device_dtype("cpu", "bf16")[1] == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        zoo.pick_device_dtype("cpu", "fp16")
    with pytest.raises(ValueError, match="dtype"):
        zoo.parse_dtype("int8")


def test_official_model_by_name_missing_is_a_usage_error(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["restore", str(photos["portrait"]), "--out", str(out), "--model", "osdface",
                 "--models-dir", str(tmp_path / "models"), "--quiet"])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "pytorch_lora_weights.safetensors" in err and str(tmp_path / "models") in err


def test_convert_delegates_to_the_converter(tmp_path, capsys):
    out = tmp_path / "converted.safetensors"
    assert main(["convert", "auto", str(tmp_path / "missing.pt"), str(out)]) == 2
    assert "missing.pt" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--help"])
    assert exc.value.code == 0 and "instantrestore" in capsys.readouterr().out


def test_compile_cache_option_saves_compiled_code_and_an_unwritable_folder_is_a_note(photos, model_file, tmp_path,
                                                                                     monkeypatch):
    """--speed compile (what auto is on a GPU) with --compile-cache: the compiled code is saved
    there; a folder that cannot be written is one report note, and the run still restores; none
    keeps nothing. (torch.compile and torch's artefact calls are stood in for: minutes on this CPU.)"""
    from restorer_core.models.compile_cache import SUFFIX
    from restorer_core.models import fast

    monkeypatch.setattr(fast, "compiled_step", lambda mode, inductor=(): fast.run_step)
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"compiled code" * 10, None))
    folder = tmp_path / "compiled"
    report = tmp_path / "r.json"
    assert _restore([photos["portrait"]], tmp_path / "a", model_file, "--speed", "compile", "--strength", "1",
                    "--compile-cache", str(folder), "--report", str(report)) == 0
    assert len(list(folder.glob("*" + SUFFIX))) == 1
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    report = tmp_path / "r_blocked.json"
    assert _restore([photos["portrait"]], tmp_path / "b", model_file, "--speed", "compile", "--strength", "1",
                    "--compile-cache", str(blocked / "compiled"), "--report", str(report)) == 0
    notes = json.loads(report.read_text())["notes"]
    assert any("compile cache folder" in n and "compiles again" in n for n in notes)
    assert list((tmp_path / "b").glob("portrait_restored.*"))
    assert _restore([photos["portrait"]], tmp_path / "c", model_file, "--speed", "compile", "--strength", "1",
                    "--compile-cache", "none") == 0
    assert len(list(folder.glob("*" + SUFFIX))) == 1 and blocked.read_text() == "not a folder"


def test_identity_from_an_insightface_folder_scores_the_report(photos, model_file, real_lq_dir, tmp_path, capsys):
    """--identity DIR: ArcFace from the folder's buffalo_l (a tiny model in its layout) scores the
    report's similarities, named in it; the default is the shipped embedder; a folder without a
    model, or a file that is not one, is a usage error before anything is written."""
    from tiny_arcface import write_tiny_arcface

    insightface = tmp_path / "insightface"
    model = write_tiny_arcface(insightface / "models" / "buffalo_l" / "w600k_r50.onnx")
    refs = real_lq_dir / "lfw_references" / "Jesse_Ventura"
    reports = {}
    for name, extra in (("arcface", ["--identity", str(insightface)]), ("shipped", [])):
        path = tmp_path / f"{name}.json"
        assert _restore([photos["portrait"]], tmp_path / name, model_file, "--refs", str(refs), "--strength", "1",
                        "--report", str(path), *extra) == 0
        reports[name] = json.loads(path.read_text())
    assert reports["arcface"]["identity"] == {"available": True, "network": "ArcFace w600k_r50.onnx",
                                              "path": str(model)}
    assert reports["shipped"]["identity"]["network"] == "identity_embedder"
    faces = {k: r["images"][0]["faces"][0] for k, r in reports.items()}
    assert all(isinstance(f["similarity_after"], float) for f in faces.values())
    assert faces["arcface"]["similarity_before"] != pytest.approx(faces["shipped"]["similarity_before"], abs=1e-3)
    for bad, said in ((tmp_path / "empty", "no ArcFace model in that folder"),
                      (write_tiny_arcface(tmp_path / "x.onnx", dim=128), "N x 512")):
        bad.mkdir(exist_ok=True) if not bad.suffix else None
        out = tmp_path / "bad"
        assert _restore([photos["portrait"]], out, model_file, "--refs", str(refs), "--identity", str(bad)) == 2
        assert said in capsys.readouterr().err and not out.exists()

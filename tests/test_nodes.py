"""The ComfyUI nodes, called through the comfy stand-in (tests/comfy_stub) on the CPU.

The pack is imported the way ComfyUI imports a custom node folder; restorers are tiny
random-weight models written to the stand-in's models folder, so only behaviour is checked
(faces found, numbered, restored, pasted only where the mask says; caches; errors; cancel).
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

STUB = Path(__file__).resolve().parent / "comfy_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

import comfy.model_management as mm  # noqa: E402  (the stand-in)
import comfy.model_patcher  # noqa: E402
import comfy.utils  # noqa: E402
import core_nodes  # noqa: E402
import folder_paths  # noqa: E402
import harness  # noqa: E402

INPUTS = harness.REPO_ROOT / "example_workflows" / "inputs"
BLAKE = INPUTS / "blake_lively.jpg"  # 700x464: a child (left) and an adult (right), both faces found
DETECT = dict(detector="yunet", detector_model="default", threshold=0.6, selection="all", max_faces=0,
              face_indices="0", min_face_size=0, similarity_threshold=0.4, track_faces=True, crop_size=256)
RESTORE = dict(mode="auto", max_refs=4, strength=1.0, seed=0, batch_size=8, auto_strength=False)
PASTE = dict(color_fix="wavelet", mask_shape="landmarks", feather=24.0, erosion=8.0)
BANK = dict(detector="yunet", detector_model="default", threshold=0.6, align_size=256)


@pytest.fixture(scope="module")
def pack():
    """The pack on the classic node API (an older ComfyUI); tests/test_nodes_v3.py checks that the
    V3 registration serves the same nodes, and the workflow tests run through both."""
    return harness.load_pack(comfy_api=False)


@pytest.fixture(scope="module")
def N(pack):
    """Node instances by id (ComfyUI makes one instance per graph node; these are stateless)."""
    return {name: cls() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}


@pytest.fixture(scope="module")
def restorer_files(pack):
    folder = Path(folder_paths.models_dir) / "face_restore_onestep"
    a = harness.write_tiny_restorer(pack, folder / "tiny_a.safetensors", seed=0)
    b = harness.write_tiny_restorer(pack, folder / "tiny_b.safetensors", seed=1)
    return a, b


@pytest.fixture(scope="module")
def handle(N, restorer_files):
    return N["OneStepLoadFaceRestorer"].load("tiny_a.safetensors", "none", "auto", "auto", False)[0]


@pytest.fixture(scope="module")
def blake():
    return harness.image_tensor(BLAKE)


@pytest.fixture(scope="module")
def adult(blake):
    return blake[:, :, 350:].contiguous()


@pytest.fixture(scope="module")
def bank(N, adult):
    return N["OneStepReferenceBankFromImages"].build(adult, **BANK)[0]


@pytest.fixture()
def identity_file(pack, tmp_path, monkeypatch):
    """A random identity embedder in place of the shipped one (which may not exist yet)."""
    sim = sys.modules[f"{pack.__name__}.nodes.similarity"]
    path = harness.write_random_identity(pack, tmp_path / "identity_embedder.safetensors")
    monkeypatch.setattr(sim, "DEFAULT_EMBEDDER_PATH", path)
    sim._IDENTITY.clear()
    yield path
    sim._IDENTITY.clear()


def detect(N, image, **overrides):
    return N["OneStepDetectFaces"].detect(image, **{**DETECT, **overrides})


def restore_paste(N, handle, image, faces, bank=None, **overrides):
    restored, crops, report = N["OneStepRestore"].restore(handle, faces, **{**RESTORE, **overrides},
                                                          reference_bank=bank)
    out, mask = N["OneStepPasteFacesBack"].paste(image, restored, **PASTE)
    return restored, out, mask, report


def box_x(face):
    return float(face.box[0])


# ----------------------------------------------------------------------------- loading


def test_pack_registers_well_formed_nodes(pack):
    classes, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert set(classes) == set(names) and len(classes) == 8
    for key, cls in classes.items():
        spec = cls.INPUT_TYPES()
        inputs = {**spec.get("required", {}), **spec.get("optional", {})}
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        assert set(inputs) <= set(params), f"{key}: {cls.FUNCTION} does not take {set(inputs) - set(params)}"
        required = [p for p, v in params.items() if p != "self" and v.default is inspect.Parameter.empty]
        assert set(required) <= set(spec["required"]), f"{key}: optional inputs need defaults"
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
        for name, entry in inputs.items():
            if entry[0] in ("INT", "FLOAT"):
                opts = entry[1]
                assert opts["min"] <= opts["default"] <= opts["max"], f"{key}.{name}"
            elif isinstance(entry[0], list):
                default = entry[1].get("default", entry[0][0]) if len(entry) > 1 else entry[0][0]
                assert default in entry[0], f"{key}.{name}"
    for folder in ("face_restore_onestep", "face_restore_onestep_cache", "facedetection"):
        assert os.path.join(folder_paths.models_dir, folder) in folder_paths.get_folder_paths(folder)


def test_every_node_explains_itself_and_every_socket_and_widget(pack):
    """DESCRIPTION, a tooltip on every input (in its options, as ComfyUI reads it) and one per
    output (OUTPUT_TOOLTIPS, in RETURN_TYPES order): what the frontend shows on hover."""
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40, key
        spec = cls.INPUT_TYPES()
        for category in ("required", "optional"):
            for name, entry in spec.get(category, {}).items():
                opts = entry[1] if len(entry) > 1 else {}
                tip = opts.get("tooltip", "")
                assert isinstance(tip, str) and len(tip.strip()) > 15, f"{key}.{name} has no tooltip"
        tips = getattr(cls, "OUTPUT_TOOLTIPS", ())
        assert len(tips) == len(cls.RETURN_TYPES), f"{key}: one OUTPUT_TOOLTIPS entry per output"
        assert all(isinstance(t, str) and len(t.strip()) > 15 for t in tips), key
        widgets = [n for c in ("required", "optional") for n, e in spec.get(c, {}).items()
                   if isinstance(e[0], list) or e[0] in ("INT", "FLOAT", "BOOLEAN")]
        for name in widgets:  # a widget's tooltip names its default, so users know what they change
            entry = {**spec.get("required", {}), **spec.get("optional", {})}[name]
            default = entry[1].get("default")
            if default is not None and not isinstance(default, bool):
                shown = f"{default}" if not isinstance(default, float) else f"{default:g}"
                assert "default" in entry[1]["tooltip"] or shown in entry[1]["tooltip"], f"{key}.{name}"


def test_node_help_pages_are_served_and_up_to_date(pack):
    """The frontend's node help panel reads WEB_DIRECTORY/docs/<node id>.md; the pages are made
    from the declarations by docs/make_node_help.py and must match them."""
    import importlib.util

    assert pack.WEB_DIRECTORY == "./web"
    spec = importlib.util.spec_from_file_location("make_node_help", harness.REPO_ROOT / "docs" / "make_node_help.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    docs = harness.REPO_ROOT / "web" / "docs"
    expected = maker.pages()
    assert sorted(expected) == sorted(f"{k}.md" for k in pack.NODE_CLASS_MAPPINGS)
    for name, text in expected.items():
        assert (docs / name).read_text(encoding="utf-8") == text, f"run python docs/make_node_help.py ({name})"
    assert "**smooth_landmarks**" in expected["OneStepDetectFaces.md"]


def test_model_list_shows_files_and_hides_osdface_parts(pack, restorer_files):
    folder = Path(folder_paths.models_dir) / "face_restore_onestep" / "osdface"
    folder.mkdir(exist_ok=True)
    for name in ("pytorch_lora_weights.safetensors", "associate_2.ckpt", "embedding_change_weights.pth"):
        (folder / name).write_bytes(b"x")
    try:
        choices = pack.NODE_CLASS_MAPPINGS["OneStepLoadFaceRestorer"].INPUT_TYPES()["required"]["model_name"][0]
    finally:
        shutil.rmtree(folder)
    assert choices[:3] == ["default (embedded)", "InstantRestore (official)", "OSDFace (official)"]
    assert {"tiny_a.safetensors", "tiny_b.safetensors", "osdface/pytorch_lora_weights.safetensors"} <= set(choices)
    assert not any(c.endswith(("associate_2.ckpt", "embedding_change_weights.pth")) for c in choices)


def test_missing_default_model_names_file_and_folder(pack, N, tmp_path, monkeypatch):
    loader = sys.modules[f"{pack.__name__}.nodes.loader"]
    missing = tmp_path / "assets" / "default_restorer.safetensors"
    monkeypatch.setattr(loader, "DEFAULT_MODEL_PATH", missing)
    errors = harness.core(pack, "errors")
    for allow in (False, True):
        with pytest.raises(errors.ModelNotFoundError) as info:
            N["OneStepLoadFaceRestorer"].load("default (embedded)", "none", "auto", "auto", allow)
        assert "default_restorer.safetensors" in str(info.value) and str(missing.parent) in str(info.value)


def test_official_models_offline_errors_name_files_and_folder(pack, N, monkeypatch):
    errors = harness.core(pack, "errors")
    folder = Path(folder_paths.models_dir) / "face_restore_onestep"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network, even when allowed
    load = N["OneStepLoadFaceRestorer"].load
    with pytest.raises(errors.ModelNotFoundError) as off:
        load("InstantRestore (official)", "none", "auto", "auto", False)
    assert "final_model_ckpt.pt" in str(off.value) and str(folder / "instantrestore") in str(off.value)
    assert "allow_download" in str(off.value)
    with pytest.raises(errors.ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load("InstantRestore (official)", "none", "auto", "auto", True)
    osd = folder / "osdface"
    osd.mkdir()
    try:
        for name in ("pytorch_lora_weights.safetensors", "embedding_change_weights.pth", "associate_2.ckpt"):
            (osd / name).write_bytes(b"x")
        with pytest.raises(errors.ModelNotFoundError) as base:  # OSDFace found; its SD 2.1-base is not
            load("OSDFace (official)", "none", "auto", "auto", False)
    finally:
        shutil.rmtree(osd)
    assert "sd21-base" in str(base.value) and "unet/diffusion_pytorch_model.safetensors" in str(base.value)


def test_restorer_goes_through_comfy_memory_manager(N, handle, blake):
    assert isinstance(handle.patcher, comfy.model_patcher.ModelPatcher)
    assert handle.dtype == torch.float32  # CPU: ComfyUI says no fp16/bf16
    mm.unload_all_models()
    faces = detect(N, blake)[0]
    restored = N["OneStepRestore"].restore(handle, faces, **RESTORE)[0]
    assert handle.patcher in mm.loaded_models()  # load_models_gpu was asked before restoring
    assert handle.patcher.model.device == handle.load_device  # ModelPatcher could assign it
    assert restored.restored_count == len(faces.faces) == 2


def test_speed_choices_restore_the_same_faces(pack, N, handle, blake, bank):
    """The loader's default runs the fast path (fused upsampling; CUDA graphs on a GPU);
    eager is the plain model: the same faces either way. An unknown speed is refused."""
    FastRestorer = sys.modules[f"{pack.__name__}.restorer_core.models.fast"].FastRestorer

    assert isinstance(handle.pipeline.runner, FastRestorer) and handle.pipeline.runner.speed.fuse_upsample
    eager = N["OneStepLoadFaceRestorer"].load("tiny_a.safetensors", "none", "auto", "auto", False,
                                              speed="eager")[0]
    assert eager.pipeline.runner is eager.pipeline.restorer
    faces = detect(N, blake)[0]
    fast_faces = N["OneStepRestore"].restore(handle, faces, **RESTORE, reference_bank=bank)[0]
    eager_faces = N["OneStepRestore"].restore(eager, faces, **RESTORE, reference_bank=bank)[0]
    for a, b in zip(fast_faces.faces, eager_faces.faces):
        assert np.abs(a.restored.astype(np.float32) - b.restored.astype(np.float32)).max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="speed must be one of"):
        N["OneStepLoadFaceRestorer"].load("tiny_a.safetensors", "none", "auto", "auto", False, speed="turbo")


def test_loader_compiles_for_a_gpu_and_keeps_the_compiled_code_under_the_models_folder(pack, N, restorer_files,
                                                                                      monkeypatch):
    """speed auto: the restorer is loaded on the CPU and run where ComfyUI puts it; for a GPU
    that is the compiled path, its code cached in models/<cache folder>/compiled (ComfyUI
    empties its temp folder at start), with the CUDA-graph path as the fallback; on the CPU it
    stays the graph choice. (Only a GPU run compiles; see benchmarks/gpu_speed_cold.py.)"""
    import folder_paths

    bridge = sys.modules[f"{pack.__name__}.nodes.comfy_bridge"]
    fast = sys.modules[f"{pack.__name__}.restorer_core.models.fast"]
    monkeypatch.setattr(bridge, "choose_device_dtype", lambda device, precision: (torch.device("cuda"), torch.float16))
    monkeypatch.setattr(bridge, "make_patcher", lambda restorer, dev, on_move=None: None)  # no CUDA here to load onto
    gpu = N["OneStepLoadFaceRestorer"].load("tiny_a.safetensors", "none", "auto", "auto", False)[0]
    runner = gpu.pipeline.runner
    assert isinstance(runner, fast.FallbackRunner) and runner.compiles
    assert runner.speed.compile_mode == "default" and runner.speed.cuda_graph
    assert runner.fallback.cuda_graph and not runner.fallback.compile_mode
    folder = runner.fast.persist.cache.folder
    assert folder.parent == Path(folder_paths.models_dir) / bridge.CACHE_FOLDER and folder.name == "compiled"
    assert not str(folder).startswith(folder_paths.get_temp_directory())
    monkeypatch.undo()
    cpu = N["OneStepLoadFaceRestorer"].load("tiny_a.safetensors", "none", "auto", "auto", False)[0]
    assert isinstance(cpu.pipeline.runner, fast.FastRestorer) and not cpu.pipeline.runner.speed.compile_mode


def test_restore_node_keeps_its_runner_between_runs_and_frees_its_graphs_when_offloaded(pack, N, restorer_files,
                                                                                      blake, monkeypatch):
    """CUDA graphs are captured once per loaded model and batch shape: a second node run builds
    no runner and releases nothing; ComfyUI moving the model off its device releases them (their
    memory is invisible to its manager)."""
    fast = sys.modules[f"{pack.__name__}.restorer_core.models.fast"]
    handle = N["OneStepLoadFaceRestorer"].load("tiny_b.safetensors", "none", "auto", "auto", False)[0]
    runner = handle.pipeline.runner
    built, released = [], []
    init = fast.FastRestorer.__init__
    monkeypatch.setattr(fast.FastRestorer, "__init__", lambda self, *a, **k: (built.append(1), init(self, *a, **k))[1])
    monkeypatch.setattr(runner, "release_graphs", lambda: released.append(1), raising=False)
    faces = detect(N, blake)[0]
    first = N["OneStepRestore"].restore(handle, faces, **RESTORE)[0]
    second = N["OneStepRestore"].restore(handle, faces, **RESTORE)[0]
    assert handle.pipeline.runner is runner and built == [] and released == []
    assert all(np.array_equal(a.restored, b.restored) for a, b in zip(first.faces, second.faces))
    handle.patcher.offload_device = torch.device("meta")  # a device to offload to, on a CPU-only machine
    mm.unload_all_models()
    assert released == [1]


def test_paste_runs_where_the_faces_were_restored(pack, N, handle, blake, monkeypatch):
    """Paste Faces Back blends on the device One-Step Restore ran on (a restorer kept on the CPU
    leaves the GPU alone), not on ComfyUI's compute device."""
    bridge = sys.modules[f"{pack.__name__}.nodes.comfy_bridge"]
    ops = sys.modules[f"{pack.__name__}.nodes.ops"]
    used = []
    real = ops.paste_frame
    monkeypatch.setattr(ops, "paste_frame", lambda *a, device=None, **k: (used.append(device), real(*a, **k))[1])
    monkeypatch.setattr(bridge, "compute_device", lambda: torch.device("meta"))  # would fail if used
    restored, out, mask, _ = restore_paste(N, handle, blake, detect(N, blake)[0])
    assert restored.device == str(handle.pipeline.device) == "cpu"
    assert used == ["cpu"] and mask.max() > 0.9


def test_device_and_precision_choice(pack):
    bridge = sys.modules[f"{pack.__name__}.nodes.comfy_bridge"]
    if not torch.cuda.is_available():
        assert bridge.choose_device_dtype("auto", "auto") == (torch.device("cpu"), torch.float32)
    assert bridge.choose_device_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="CPU"):
        bridge.choose_device_dtype("cpu", "fp16")


# ----------------------------------------------------------------------------- detection


def test_detect_numbers_faces_left_to_right_and_masks_them(N, blake):
    faces, crops, mask, report = detect(N, blake)
    assert [f.face_index for f in faces.faces] == [0, 1]
    assert box_x(faces.faces[0]) < box_x(faces.faces[1])
    assert crops.shape == (2, 256, 256, 3) and mask.shape == (1, 464, 700)
    for f in faces.faces:
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        assert mask[0, (y0 + y1) // 2, (x0 + x1) // 2] == 1.0
    assert mask[0, 5, 5] == 0.0 and "2 face(s)" in report


@pytest.mark.parametrize("overrides, kept", [
    (dict(selection="largest", max_faces=1), [1]),
    (dict(selection="index", face_indices="1"), [1]),
    (dict(selection="index", face_indices="0-1"), [0, 1]),
    (dict(min_face_size=220), [1]),
])
def test_detect_selection(N, blake, overrides, kept):
    faces = detect(N, blake, **overrides)[0]
    assert [f.face_index for f in faces.faces] == kept


def test_tracking_keeps_a_face_number_when_another_face_appears(N, blake):
    only_adult = blake.clone()
    only_adult[:, :, :340] = 0.5  # frame 0: the child is not in view yet
    frames = torch.cat([only_adult, blake, blake])
    tracked = detect(N, frames, track_faces=True)[0]
    untracked = detect(N, frames, track_faces=False)[0]
    adult_tracked = {f.image_index: f.face_index for f in tracked.faces if box_x(f) > 350}
    adult_untracked = {f.image_index: f.face_index for f in untracked.faces if box_x(f) > 350}
    assert adult_tracked == {0: 0, 1: 0, 2: 0}  # the adult stays face 0 ...
    assert adult_untracked == {0: 0, 1: 1, 2: 1}  # ... where left-to-right numbering would renumber
    child = [f.face_index for f in tracked.faces if box_x(f) < 350]
    assert child == [1, 1]


def test_smooth_landmarks_steadies_a_face_across_frames(N, handle, adult):
    """Frames of one face moved by known sub-pixel shifts, each with its own noise: with
    smooth_landmarks the aligned landmarks wobble much less around the known motion; the first
    frame is the same either way; Restore Faces takes the same switch."""
    import cv2

    rng = np.random.default_rng(0)
    base = adult[0].numpy()
    frames, shifts = [], []
    for k in range(10):
        dx, dy = 0.3 * k + rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        moved = cv2.warpAffine(base, m, base.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
        frames.append(np.clip(moved + rng.normal(0, 0.02, moved.shape), 0, 1).astype(np.float32))
        shifts.append((dx, dy))
    clip = torch.from_numpy(np.stack(frames))
    marks = {}
    for smooth in (False, True):
        faces = detect(N, clip, smooth_landmarks=smooth, crop_size=128)[0]
        assert [f.image_index for f in faces.faces] == list(range(10))
        marks[smooth] = np.stack([np.asarray(f.landmarks, np.float64) - s for f, s in zip(faces.faces, shifts)])
    wobble = {s: np.abs(np.diff(m[3:], axis=0)).mean() for s, m in marks.items()}
    assert wobble[True] < 0.6 * wobble[False]
    np.testing.assert_allclose(marks[True][0], marks[False][0], atol=1e-4)
    keys = ("detector", "detector_model", "threshold", "selection", "max_faces", "face_indices",
            "min_face_size", "similarity_threshold")
    out, mask, report = N["OneStepRestoreFaces"].run(clip[:3], handle, **RESTORE, **{k: DETECT[k] for k in keys},
                                                     **PASTE, smooth_landmarks=True)
    assert out.shape == clip[:3].shape and "restored 3 face(s)" in report


def test_no_faces_pass_through_unchanged(N, handle, bank):
    gray = torch.full((2, 96, 128, 3), 0.5)
    gray[1, 10:20] = 0.25
    faces, crops, mask, report = detect(N, gray)
    assert faces.faces == [] and crops.shape[0] == 1 and float(mask.abs().sum()) == 0.0
    assert "no face" in report
    restored, out, paste_mask, restore_report = restore_paste(N, handle, gray, faces, bank)
    assert torch.equal(out, gray) and float(paste_mask.abs().sum()) == 0.0
    assert "no faces" in restore_report
    image, mask2, report2 = N["OneStepRestoreFaces"].run(gray, handle, **RESTORE, **{k: DETECT[k] for k in (
        "detector", "detector_model", "threshold", "selection", "max_faces", "face_indices", "min_face_size",
        "similarity_threshold")}, **PASTE, reference_bank=bank)
    assert torch.equal(image, gray) and "pass through unchanged" in report2


# ----------------------------------------------------------------------------- restore + paste


def test_restore_and_paste_touch_only_the_masked_faces(N, handle, blake, bank):
    faces = detect(N, blake, selection="index", face_indices="1")[0]
    restored, out, mask, report = restore_paste(N, handle, blake, faces, bank)
    assert out.shape == blake.shape and mask.shape == (1, 464, 700)
    outside = mask[0] == 0
    assert torch.equal(out[0][outside], blake[0][outside])
    assert float((out[0][mask[0] > 0.5] - blake[0][mask[0] > 0.5]).abs().mean()) > 1e-3
    x0 = int(faces.faces[0].box[0])
    assert float(mask[0, :, : x0 - 40].max()) == 0.0  # the child (not selected) is untouched
    assert "references + visual prompt" in report


def test_strength_zero_keeps_the_input_face(N, handle, blake):
    faces = detect(N, blake)[0]
    restored = N["OneStepRestore"].restore(handle, faces, **{**RESTORE, "strength": 0.0})[0]
    for before, after in zip(faces.faces, restored.faces):
        np.testing.assert_allclose(after.restored, before.crop, atol=1e-6)


def test_auto_strength_leaves_sharp_faces_restores_blurred_ones_and_reports_each(N, handle, blake, bank, real_lq_dir):
    for node in ("OneStepRestore", "OneStepRestoreFaces"):
        spec = N[node].INPUT_TYPES()["optional"]["auto_strength"]
        assert spec[0] == "BOOLEAN" and spec[1]["default"] is True and "sharp" in spec[1]["tooltip"]
    faces = detect(N, blake, crop_size=512)[0]
    restored, out, _, report = restore_paste(N, handle, blake, faces, auto_strength=True)
    by_index = {f.face_index: f for f in restored.faces}
    adult, child = by_index[1], by_index[0]  # the child is a halftone print: its dots read as noise
    assert adult.info["strength"] == 0.0 and adult.info["kept"] and child.info["strength"] > 0.2
    assert "strength per face" in report and "kept: already sharp" in report
    x0, y0, x1, y1 = (int(v) for v in adult.box)  # the kept face is not pasted: the input's pixels
    assert torch.equal(out[0, y0:y1, x0:x1], blake[0, y0:y1, x0:x1])
    # x16 (the tiny test restorer works at 32 px: a face must be blurred at that scale)
    small = torch.nn.functional.interpolate(blake.movedim(-1, 1), scale_factor=1 / 16, mode="area")
    blurred = torch.nn.functional.interpolate(small, size=blake.shape[1:3], mode="bicubic").clamp(0, 1)
    blurred = blurred.movedim(1, -1).contiguous()
    lq_faces = detect(N, blurred, crop_size=512)[0]
    assert lq_faces.faces
    from restorer_core.restore.identity_gate import KEPT_STRUCTURELESS, NO_REFS_STRENGTH, structure_factor

    # no references: the measure's 1, scaled by the no-references policy of each face's structure
    lq_restored, lq_out, _, _ = restore_paste(N, handle, blurred, lq_faces, auto_strength=True)
    for f in lq_restored.faces:
        factor = structure_factor(True, False, f.info["detail"]["structure"])
        assert f.info["no_refs_scale"] == NO_REFS_STRENGTH
        assert f.info.get("structure_factor", 1.0) == pytest.approx(factor, abs=1e-3)  # structure rounded to 1e-4
        assert f.info["strength"] == pytest.approx(f.info["detail"]["strength"] * factor * NO_REFS_STRENGTH, abs=1e-3)
    assert max(f.info["strength"] for f in lq_restored.faces) >= 0.9 * NO_REFS_STRENGTH
    assert (lq_out - blurred).abs().max().item() > 10 / 255
    # a photo degraded 16x (noise and JPEG as in training): too little structure is left to guess
    # who it is: kept (the input's pixels, the reason in the report) without references, restored with them
    from restorer_core.io.imageio import load_image
    from restorer_core.train.degrade import degrade_fixed

    photo = load_image(real_lq_dir / "lfw_references" / "Michael_Chang" / "Michael_Chang_0005.jpg").rgb8
    gone = torch.from_numpy(degrade_fixed(photo, 16, seed=0).astype(np.float32) / 255.0)[None].contiguous()
    gone_faces = detect(N, gone, crop_size=512)[0]
    assert gone_faces.faces
    kept, kept_out, _, kept_report = restore_paste(N, handle, gone, gone_faces, auto_strength=True)
    assert all(f.info["kept"] == KEPT_STRUCTURELESS for f in kept.faces)
    assert "too blurred to restore without references" in kept_report
    assert "already sharp" not in kept_report  # the strength line gives the face's own reason
    assert torch.equal(kept_out, gone)
    for node in ("OneStepRestore", "OneStepRestoreFaces"):  # the widget that turns the policy off, last
        optional = list(N[node].INPUT_TYPES()["optional"])
        assert optional[-1] == "keep_identity_without_refs"
    full, full_out, _, _ = restore_paste(N, handle, gone, gone_faces, auto_strength=True,
                                         keep_identity_without_refs=False)
    assert all(f.info["strength"] >= 0.9 and "no_refs_scale" not in f.info and not f.info.get("kept")
               for f in full.faces)
    assert (full_out - gone).abs().max().item() > 10 / 255
    with_refs, refs_out, _, _ = restore_paste(N, handle, gone, gone_faces, bank, auto_strength=True)
    assert all(f.info["strength"] >= 0.9 and "no_refs_scale" not in f.info for f in with_refs.faces)
    assert (refs_out - gone).abs().max().item() > 10 / 255


def test_all_in_one_matches_the_split_nodes(N, handle, blake, bank):
    crop = 512  # what Restore Faces aligns at for a restorer below 512 px
    faces = detect(N, blake, crop_size=crop)[0]
    _, split_out, split_mask, _ = restore_paste(N, handle, blake, faces, bank)
    keys = ("detector", "detector_model", "threshold", "selection", "max_faces", "face_indices",
            "min_face_size", "similarity_threshold")
    out, mask, report = N["OneStepRestoreFaces"].run(blake, handle, **RESTORE, **{k: DETECT[k] for k in keys},
                                                     **PASTE, reference_bank=bank)
    assert torch.equal(out, split_out) and torch.equal(mask, split_mask)
    assert "restored 2 face(s)" in report


def test_mode_needing_references_without_bank_is_a_clear_error(N, handle, blake):
    faces = detect(N, blake)[0]
    with pytest.raises(ValueError, match="reference"):
        N["OneStepRestore"].restore(handle, faces, **{**RESTORE, "mode": "references"})


def test_restorer_trained_without_references_ignores_a_bank_and_says_why(pack, N, blake, bank):
    """An OSDFace-type restorer with a bank in auto: the same faces as without the bank, and the
    loader text and restore report say why (the library's conditioning decision)."""
    folder = Path(folder_paths.models_dir) / "face_restore_onestep"
    harness.write_tiny_restorer(pack, folder / "tiny_osd.safetensors", seed=2, method="osdface")
    osd = N["OneStepLoadFaceRestorer"].load("tiny_osd.safetensors", "none", "auto", "auto", False)[0]
    assert "trained without references" in osd.describe()
    faces = detect(N, blake)[0]
    with_bank, _, report = N["OneStepRestore"].restore(osd, faces, **RESTORE, reference_bank=bank)
    without, _, _ = N["OneStepRestore"].restore(osd, faces, **RESTORE)
    for a, b in zip(with_bank.faces, without.faces):
        np.testing.assert_array_equal(a.restored, b.restored)
    assert "conditioning: visual prompt" in report and "trained without references" in report
    assert "cache" not in report  # no reference keys/values were computed
    with pytest.raises(ValueError, match="trained without reference"):
        N["OneStepRestore"].restore(osd, faces, **{**RESTORE, "mode": "references"}, reference_bank=bank)


def test_paste_refuses_faces_from_another_batch(N, handle, blake, adult):
    faces = detect(N, blake)[0]
    restored = N["OneStepRestore"].restore(handle, faces, **RESTORE)[0]
    with pytest.raises(ValueError, match="same IMAGE"):
        N["OneStepPasteFacesBack"].paste(adult, restored, **PASTE)


def test_mixed_size_batch_from_core_image_batch(N, handle, blake, adult, bank):
    """ImageBatch resizes the second image to the first one's size; faces of both are restored."""
    batch = core_nodes.ImageBatch().batch(blake, adult)[0]
    assert batch.shape == (2, 464, 700, 3)
    faces = detect(N, batch, track_faces=False)[0]
    assert {f.image_index for f in faces.faces} == {0, 1}
    restored, out, mask, _ = restore_paste(N, handle, batch, faces, bank)
    assert out.shape == batch.shape and all(float(mask[i].max()) > 0.5 for i in range(2))


# ----------------------------------------------------------------------------- reference banks


def test_bank_from_images_lists_rejected_images(N, blake):
    child_only = blake.clone()
    child_only[:, :, 340:] = 0.5
    batch = torch.cat([blake, torch.full_like(blake, 0.5), child_only])  # two faces; none; one
    bank, report = N["OneStepReferenceBankFromImages"].build(batch, **BANK)
    assert len(bank) == 1 and bank.crops.shape == (1, 3, 256, 256)
    assert "rejected image 0: ambiguous" in report
    assert "rejected image 1: no face found" in report
    assert "used image 2" in report


def test_empty_bank_is_a_clear_error(pack, N, adult, tmp_path):
    errors = harness.core(pack, "errors")
    with pytest.raises(errors.BankError, match="no usable reference face"):
        N["OneStepReferenceBankFromImages"].build(torch.full_like(adult, 0.5), **BANK)
    with pytest.raises(errors.BankError, match="no reference images"):
        N["OneStepReferenceBank"].build(str(tmp_path), **BANK)
    with pytest.raises(errors.BankError, match="not found"):
        N["OneStepReferenceBank"].build(str(tmp_path / "nobody"), **BANK)


def test_bank_folder_node_and_its_change_detection(pack, N, tmp_path):
    from PIL import Image

    cls = pack.NODE_CLASS_MAPPINGS["OneStepReferenceBank"]
    Image.open(BLAKE).crop((350, 0, 700, 464)).save(tmp_path / "adult.png")
    first = cls.IS_CHANGED(folder=str(tmp_path), **BANK)
    bank, report = N["OneStepReferenceBank"].build(str(tmp_path), **BANK)
    assert len(bank) == 1 and "used adult.png" in report
    assert cls.IS_CHANGED(folder=str(tmp_path), **BANK) == first
    (tmp_path / "notes.txt").write_text("not an image")
    assert cls.IS_CHANGED(folder=str(tmp_path), **BANK) == first  # only images count
    Image.open(BLAKE).save(tmp_path / "both.png")
    assert cls.IS_CHANGED(folder=str(tmp_path), **BANK) != first
    bank2, report2 = N["OneStepReferenceBank"].build(str(tmp_path), **BANK)
    assert len(bank2) == 1 and "rejected both.png: ambiguous" in report2


def test_reference_cache_is_reused_and_never_misused_across_restorers(pack, N, blake, bank):
    bank_mod = harness.core(pack, "restore.reference_cache")
    load = N["OneStepLoadFaceRestorer"].load
    faces = detect(N, blake, selection="index", face_indices="1")[0]
    cache = folder_paths.get_folder_paths("face_restore_onestep_cache")[0]
    a1 = load("tiny_a.safetensors", "none", "auto", "auto", False)[0]
    path_a = bank_mod.cache_path(bank, a1.restorer, 4, 0, cache)
    path_a.unlink(missing_ok=True)
    first = N["OneStepRestore"].restore(a1, faces, **RESTORE, reference_bank=bank)
    assert "cache miss" in first[2] and path_a.is_file()
    a2 = load("tiny_a.safetensors", "none", "auto", "auto", False)[0]
    again = N["OneStepRestore"].restore(a2, faces, **RESTORE, reference_bank=bank)
    assert "cache hit" in again[2]
    np.testing.assert_array_equal(again[0].faces[0].restored, first[0].faces[0].restored)

    b1 = load("tiny_b.safetensors", "none", "auto", "auto", False)[0]
    path_b = bank_mod.cache_path(bank, b1.restorer, 4, 0, cache)
    assert path_b != path_a
    shutil.copyfile(path_a, path_b)  # a cache made for restorer A, where B looks for its own
    planted = N["OneStepRestore"].restore(b1, faces, **RESTORE, reference_bank=bank)
    assert "cache stale" in planted[2]
    b2 = load("tiny_b.safetensors", "none", "auto", "auto", False)[0]
    own = N["OneStepRestore"].restore(b2, faces, **RESTORE, reference_bank=bank)
    assert "cache hit" in own[2]  # the foreign file was replaced by B's own keys/values
    np.testing.assert_array_equal(planted[0].faces[0].restored, own[0].faces[0].restored)


# ----------------------------------------------------------------------------- identity


def test_face_similarity_and_similar_selection(N, blake, bank, identity_file):
    faces = detect(N, blake)[0]
    scores, report = N["OneStepFaceSimilarity"].score(faces, bank)
    child, grown = scores  # left to right; the bank holds the adult's own face (cut from this photo)
    assert grown > 0.95 and grown - child > 0.1
    assert "input" in report and "restored" not in report
    kept = detect(N, blake, selection="similar", similarity_threshold=(grown + child) / 2, reference_bank=bank)[0]
    assert [f.face_index for f in kept.faces] == [1]


def test_identity_check_names_faces_unlike_the_bank(N, handle, blake, bank, caplog):
    """With the shipped identity network: restoring both faces against a bank of the adult says,
    in the report and as a console warning, that the child (face #0) is below the same-person
    threshold; the adult (#1) is not named. Without a bank there is no check."""
    import logging

    faces = detect(N, blake)[0]
    with caplog.at_level(logging.WARNING, logger="onestep_face_restore"):
        report = N["OneStepRestore"].restore(handle, faces, **RESTORE, reference_bank=bank)[2]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "image 0 face #0" in warned[0] and "same-person threshold" in warned[0]
    assert "WARNING image 0 face #0" in report and "face #1: similarity" not in report
    assert "identity check" in report and "image 0 face #1" in report  # every face's score is listed
    plain = N["OneStepRestore"].restore(handle, faces, **RESTORE)[2]
    assert "identity check" not in plain
    unused = N["OneStepRestore"].restore(handle, faces, **{**RESTORE, "mode": "visual_prompt"},
                                         reference_bank=bank)[2]
    assert "identity check" not in unused  # a bank that does not steer the restorer is not checked
    marks = [line.endswith("not the bank's person") for line in N["OneStepFaceSimilarity"].score(faces, bank)[1].splitlines()[1:]]
    assert marks == [True, False]  # Face Similarity marks the same face


def test_same_person_selection_restores_only_the_bank_person(N, handle, blake, bank):
    faces, _, _, report = detect(N, blake, selection="same_person", reference_bank=bank)
    assert [f.face_index for f in faces.faces] == [1]
    keys = ("detector", "detector_model", "threshold", "max_faces", "face_indices", "min_face_size",
            "similarity_threshold")
    out, mask, text = N["OneStepRestoreFaces"].run(blake, handle, **RESTORE, **{k: DETECT[k] for k in keys},
                                                   selection="same_person", **PASTE, reference_bank=bank)
    assert float(mask[0, :, :300].max()) == 0.0 and float(mask[0, :, 400:].max()) > 0.5  # child untouched
    assert torch.equal(out[0, :, :300], blake[0, :, :300])
    assert "restored 1 face(s)" in text and "WARNING" not in text
    with pytest.raises(ValueError, match="REF_BANK"):
        detect(N, blake, selection="same_person")


def test_missing_identity_embedder_names_file_folder_and_way_out(pack, N, blake, bank, tmp_path, monkeypatch):
    sim = sys.modules[f"{pack.__name__}.nodes.similarity"]
    missing = tmp_path / "models" / "identity_embedder.safetensors"
    monkeypatch.setattr(sim, "DEFAULT_EMBEDDER_PATH", missing)
    errors = harness.core(pack, "errors")
    faces = detect(N, blake)[0]
    with pytest.raises(errors.ModelNotFoundError) as node:
        N["OneStepFaceSimilarity"].score(faces, bank)
    with pytest.raises(errors.ModelNotFoundError) as selection:
        detect(N, blake, selection="similar", reference_bank=bank)
    for info in (node, selection):
        assert missing.name in str(info.value) and str(missing.parent) in str(info.value)
    assert "Face Similarity node" in str(node.value) and "other than 'similar'" in str(selection.value)


def test_similar_selection_without_bank_is_a_clear_error(N, blake):
    with pytest.raises(ValueError, match="REF_BANK"):
        detect(N, blake, selection="similar")


# ----------------------------------------------------------------------------- cancel


def test_cancel_between_batches_raises_comfy_interrupt(N, handle, blake):
    faces = detect(N, blake)[0]
    calls = []

    def hook(value, total, preview, node_id=None):
        calls.append(value)
        mm.interrupt_current_processing(True)  # the user presses Cancel after the first batch

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            N["OneStepRestore"].restore(handle, faces, **{**RESTORE, "batch_size": 1})
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert calls == [1]  # one of the two faces was done, the second batch never started
    assert not mm.processing_interrupted()


# ----------------------------------------------------------------------------- ArcFace from insightface


@pytest.fixture()
def insightface_arcface(pack, monkeypatch):
    """A tiny model in ArcFace's layout where insightface's buffalo_l keeps w600k_r50.onnx."""
    from tiny_arcface import write_tiny_arcface

    sim = sys.modules[f"{pack.__name__}.nodes.similarity"]
    monkeypatch.delenv(sim.IDENTITY_ENV, raising=False)
    root = Path(folder_paths.models_dir) / "insightface"
    path = write_tiny_arcface(root / "models" / "buffalo_l" / "w600k_r50.onnx")
    sim._IDENTITY.clear()
    yield path
    shutil.rmtree(root)
    sim._IDENTITY.clear()


def test_nodes_score_identity_with_arcface_when_insightface_has_it(pack, N, handle, blake, bank, insightface_arcface,
                                                                   monkeypatch):
    """Face Similarity, the identity check and same_person selection all use the user's ArcFace
    (its scores, its 0.28 threshold, its name in the reports); ONESTEP_IDENTITY=shipped goes back
    to the shipped embedder."""
    arcface = harness.core(pack, "face_id.arcface_onnx").ArcFaceOnnx(insightface_arcface)
    identity = harness.core(pack, "faces.identity")
    faces = detect(N, blake)[0]
    scores, report = N["OneStepFaceSimilarity"].score(faces, bank)
    expected = identity.IdentityScorer(arcface).similarity([f.crop for f in faces.faces], bank)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert "by ArcFace w600k_r50.onnx" in report and "same person from 0.28" in report
    restored = N["OneStepRestore"].restore(handle, faces, **RESTORE, reference_bank=bank)[2]
    assert "identity check (ArcFace w600k_r50.onnx, same person from 0.28)" in restored
    kept = detect(N, blake, selection="same_person", reference_bank=bank)[0]
    assert [f.face_index for f in kept.faces] == [i for i, s in enumerate(expected) if s >= 0.28]
    monkeypatch.setenv("ONESTEP_IDENTITY", "shipped")
    shipped = N["OneStepFaceSimilarity"].score(faces, bank)[1]
    assert "by identity_embedder" in shipped and "ArcFace" not in shipped


def test_arcface_that_cannot_run_falls_back_or_says_why(pack, N, blake, bank, insightface_arcface, monkeypatch,
                                                        capsys, tmp_path):
    """A found model that is not ArcFace's layout: the shipped embedder, and a console line naming
    the file; a model the user named (ONESTEP_IDENTITY) that is missing or broken: an error."""
    from tiny_arcface import write_tiny_arcface

    errors = harness.core(pack, "errors")
    write_tiny_arcface(insightface_arcface, dim=256)  # found, but a 256-d output
    faces = detect(N, blake)[0]
    capsys.readouterr()
    report = N["OneStepFaceSimilarity"].score(faces, bank)[1]
    N["OneStepFaceSimilarity"].score(faces, bank)
    assert "by identity_embedder" in report
    notes = [ln for ln in capsys.readouterr().out.splitlines() if "w600k_r50.onnx" in ln]
    assert len(notes) == 1 and "N x 512" in notes[0] and "using the shipped embedder" in notes[0]  # said once
    monkeypatch.setenv("ONESTEP_IDENTITY", str(insightface_arcface))
    with pytest.raises(errors.CheckpointError, match="expected one N x 512 embedding"):
        N["OneStepFaceSimilarity"].score(faces, bank)
    monkeypatch.setenv("ONESTEP_IDENTITY", str(tmp_path / "glintr100.onnx"))
    with pytest.raises(errors.ModelNotFoundError, match="no such file"):
        N["OneStepFaceSimilarity"].score(faces, bank)

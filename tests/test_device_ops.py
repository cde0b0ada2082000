"""The torch path (warps, resizes, feather, paste-back) equals the OpenCV path it replaced.

Stated tolerances, on the CPU: float outputs within 1e-5 (warps, resizes, masks, pastes; 5e-5 for
a restored crop after resizes, detail transfer and blend); 8- and 16-bit pastes within one level
(float rounding can flip a .5), mean far below; 8-bit warps within one level of OpenCV's rounded
ones. Pixels no mask touches are bit-identical, alpha untouched.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cv2_paste_reference import face_mask_cv2, paste_faces_cv2
from restorer_core.faces import warp_torch
from restorer_core.faces.align import warp_affine
from restorer_core.faces.locate import locate_faces
from restorer_core.io.imageio import load_image
from restorer_core.restore.composite import device_image, host_image, paste_into
from restorer_core.restore.paste import PasteConfig, face_mask, paste_faces
from restorer_core.restore.pipeline import resize_square

FAMILY = Path(__file__).resolve().parents[1] / "examples" / "family_10045.png"


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.hstack([scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]), [[tx], [ty]]])


def as_chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


@pytest.fixture(scope="module")
def family() -> np.ndarray:
    return load_image(FAMILY).rgb8


@pytest.fixture(scope="module")
def restored_faces(family, yunet):
    """The photo's three faces at 256 px, each 'restored' with a colour cast, more contrast and
    grain, so colour fix and blending both have work to do."""
    faces = locate_faces(family, yunet, crop_size=256)
    assert len(faces) == 3
    rng = np.random.default_rng(0)
    for f in faces:
        changed = (f.crop - 0.5) * 1.3 + 0.5 + np.array([0.06, -0.02, -0.05]) + rng.normal(0, 0.03, f.crop.shape)
        f.restored = np.clip(changed, 0.0, 1.0).astype(np.float32)
    return faces


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("border", ["replicate", "reflect", "constant"])
@pytest.mark.parametrize("matrix,size", [(similarity(1.3, 17.0, -30.0, 10.0), 256),  # enlarging
                                         (similarity(0.2, 7.0, -10.0, -5.0), 128),  # area pre-shrink
                                         (similarity(1.0, 25.0, 60.0, 50.0), 128)])  # past the edges
def test_warp_matches_opencv(family, border, matrix, size):
    ref_float = warp_affine(family.astype(np.float32) / 255, matrix, (size, size), border=border)
    got = warp_torch.warp_affine(as_chw(family).float() / 255, matrix, (size, size), border=border)
    assert np.abs(got.permute(1, 2, 0).numpy() - ref_float).max() <= 1e-5
    ref_u8 = warp_affine(family, matrix, (size, size), border=border).astype(np.float32)
    got_u8 = warp_torch.warp_affine(as_chw(family), matrix, (size, size), border=border).permute(1, 2, 0).numpy()
    diff = np.abs(got_u8 - ref_u8)  # OpenCV rounds to uint8 (and rounds its area pre-shrink too)
    assert diff.max() <= 1.0 and diff.mean() < 0.35


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("border", ["replicate", "reflect", "constant"])
@pytest.mark.parametrize("shape", [(1, 7), (9, 1), (1, 1), (6, 5)])
@pytest.mark.parametrize("out_size", [(12, 10), (1, 1), (1, 6), (5, 1)])
def test_warp_matches_opencv_on_thin_sources_and_border_values(border, shape, out_size):
    """Sources and outputs one pixel wide or high (grid_sample's coordinates need two source
    samples) and a non-zero constant border, on a rotation that reads inside and outside the source."""
    src = np.random.default_rng(3).random((*shape, 3)).astype(np.float32)
    matrix = similarity(1.7, 23.0, 2.0, -1.0)
    for value in (0.0, 0.4):
        ref = warp_affine(src, matrix, out_size, border=border, antialias=False, border_value=value)
        got = warp_torch.warp_affine(as_chw(src), matrix, out_size, border=border, antialias=False,
                                     border_value=value)
        assert np.abs(got.permute(1, 2, 0).numpy() - ref.reshape(got.shape[1], got.shape[2], 3)).max() <= 1e-5


@pytest.mark.parametrize("n_in,n_out", [(512, 128), (512, 200), (128, 512), (100, 333)])
def test_resize_square_matches_opencv(n_in, n_out):
    x = np.random.default_rng(n_in + n_out).random((n_in, n_in, 3), dtype=np.float32)
    got = warp_torch.resize_square(as_chw(x), n_out).permute(1, 2, 0).numpy()
    assert np.abs(got - resize_square(x, n_out)).max() <= 1e-5


@pytest.mark.parametrize("mode", ["landmarks", "ellipse", "box"])
def test_feathered_mask_matches_opencv_blur(restored_faces, mode):
    from restorer_core.faces.align import landmarks_in_crop

    cfg = PasteConfig(mask=mode, erosion=8, feather=24)
    face = restored_faces[0]
    got = face_mask(256, cfg, landmarks_in_crop(face))
    ref = face_mask_cv2(256, cfg, landmarks_in_crop(face))
    assert np.abs(got - ref).max() <= 1e-6
    assert np.array_equal(got == 0, ref == 0)


# ----------------------------------------------------------------------------- paste


def _layout(rgb8: np.ndarray, dtype, layout: str) -> np.ndarray:
    img = rgb8.astype(np.float32) / 255
    if layout == "gray":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif layout == "gray1":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    elif layout == "rgba":
        alpha = (np.indices(img.shape[:2]).sum(axis=0) % 7 / 6.0).astype(np.float32)
        img = np.dstack([img, alpha])
    if dtype == np.float32:
        return img
    peak = 255 if dtype == np.uint8 else 65535
    return np.rint(img * peak).astype(dtype)


@pytest.mark.parametrize("dtype,layout", [(np.uint8, "rgb"), (np.uint16, "rgb"), (np.float32, "rgb"),
                                          (np.uint8, "gray"), (np.uint16, "gray1"), (np.uint8, "rgba"),
                                          (np.float32, "rgba")])
def test_paste_matches_the_opencv_path(family, restored_faces, dtype, layout):
    img = _layout(family, dtype, layout)
    cfg = PasteConfig()  # landmark mask, wavelet colour fix
    out, mask = paste_faces(img, restored_faces, cfg)
    ref, ref_mask = paste_faces_cv2(img, restored_faces, cfg)
    assert out.dtype == img.dtype and out.shape == img.shape
    assert np.abs(mask - ref_mask).max() <= 1e-5
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    if dtype == np.float32:
        assert diff.max() <= 1e-5
    else:
        assert diff.max() <= 1.0 and diff.mean() < 1e-3
    assert (mask > 0.5).sum() > 3000
    untouched = mask == 0
    assert untouched.sum() > 0.9 * mask.size
    assert np.array_equal(out[untouched], img[untouched])  # bit-identical
    if layout == "rgba":
        assert np.array_equal(out[..., 3], img[..., 3])


def test_device_image_round_trip_pastes_like_the_array_path(family, restored_faces):
    """The pipeline's way (a device copy, 16-bit carried as int32) gives the numpy wrapper's pixels."""
    img = _layout(family, np.uint16, "rgb")
    tensor, peak = device_image(img, "cpu")
    assert tensor.dtype == torch.int32 and peak == 65535.0
    mask = paste_into(tensor, restored_faces, PasteConfig(), peak=peak)
    out = host_image(tensor, img.dtype)
    expected, expected_mask = paste_faces(img, restored_faces, PasteConfig())
    assert np.array_equal(out, expected) and torch.equal(mask, torch.from_numpy(expected_mask))


def test_faces_at_strength_zero_are_not_even_resampled(family, restored_faces):
    kept = [f.with_restored(f.restored) for f in restored_faces]
    kept[1].info["strength"] = 0.0
    out, mask = paste_faces(family, kept, PasteConfig())
    only_others, _ = paste_faces(family, [kept[0], kept[2]], PasteConfig())
    assert np.array_equal(out, only_others)
    x0, y0, x1, y1 = kept[1].box.astype(int)
    assert not mask[y0:y1, x0:x1].any()


# ----------------------------------------------------------------------------- pipeline


def test_restore_faces_post_processing_matches_the_numpy_steps(restored_faces, tmp_path):
    """Resize to the restorer, back to the crop, detail transfer and strength blend, now on the
    restorer's device, equal the numpy steps they replaced (cv2 resizes, numpy arithmetic)."""
    from tiny_models import tiny_config

    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    torch.manual_seed(0)
    pipeline = FaceRestorePipeline(OneStepRestorer(tiny_config()), speed="eager")
    res = pipeline.resolution
    options = RestoreOptions(mode="none", strength=0.6, cache_dir=str(tmp_path))
    faces = [f.with_restored(None) for f in restored_faces]
    out = pipeline.restore_faces(faces, options=options)
    crops = [f.crop for f in sorted(faces, key=lambda f: f.face_index)]
    x = torch.from_numpy(np.stack([resize_square(c, res) for c in crops])).permute(0, 3, 1, 2)
    gens = [torch.Generator("cpu").manual_seed(0) for _ in crops]
    with torch.inference_mode():
        y = pipeline.restorer(x, None, "none", generator=gens).float().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert crops[0].shape[0] > res  # detail transfer has work to do
    for face, crop, raw in zip(out, crops, y):
        size = crop.shape[0]
        up = resize_square(raw, size)
        detailed = np.clip(up + crop - resize_square(resize_square(crop, res), size), 0.0, 1.0)
        expected = crop + np.float32(0.6) * (detailed - crop)
        assert face.info["strength"] == 0.6
        assert np.abs(face.restored - expected).max() <= 5e-5  # float32 sums in another order


def test_automatic_strength_is_measured_while_locating_and_used_by_the_restore(family, yunet, tmp_path,
                                                                               monkeypatch):
    """locate_images (the CLI runs it on its reader thread) measures each face's detail; the restore
    uses that measurement and gives what measuring at restore time gives."""
    from tiny_models import tiny_config

    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.restore import pipeline as pipeline_mod

    torch.manual_seed(0)
    pipe = pipeline_mod.FaceRestorePipeline(OneStepRestorer(tiny_config()), speed="eager")
    pipe.add_detector(pipeline_mod.RestoreOptions(), yunet)
    options = pipeline_mod.RestoreOptions(mode="none", cache_dir=str(tmp_path))
    fresh = pipe.restore_images([family], options=options)[0]
    located = pipe.locate_images([family], options=options)
    assert all(pipeline_mod.MEASURED_AHEAD in f.info for f in located.faces)

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again at restore time")

    monkeypatch.setattr(pipeline_mod, "face_strength", no_measuring)
    ahead = pipe.finish_images(located, options=options)[0]
    assert [f.info["strength"] for f in ahead.faces] == [f.info["strength"] for f in fresh.faces]
    assert all(pipeline_mod.MEASURED_AHEAD not in f.info for f in ahead.faces)
    assert np.array_equal(ahead.pixels, fresh.pixels)


@pytest.mark.parametrize("dtype,layout", [(np.uint8, "rgb"), (np.uint16, "rgb"), (np.float32, "rgba"),
                                          (np.uint8, "gray")])
def test_device_paste_moves_only_the_window_and_gives_the_same_pixels(family, restored_faces, dtype, layout):
    """paste_window (what paste_faces does on a GPU) equals pasting the whole image, bit for bit,
    and the window is smaller than the image; a window that misses a face is refused."""
    from restorer_core.restore.composite import faces_window
    from restorer_core.restore.paste import paste_window

    img = _layout(family, dtype, layout)
    expected, expected_mask = paste_faces(img, restored_faces, PasteConfig())
    out, mask = paste_window(img, restored_faces, PasteConfig(), False, True, "cpu")
    assert np.array_equal(out, expected) and np.array_equal(mask, expected_mask)
    x0, y0, x1, y1 = faces_window(restored_faces, img.shape[:2])
    assert (x1 - x0) * (y1 - y0) < 0.9 * img.shape[0] * img.shape[1]
    assert not mask[:y0].any() and not mask[y1:].any() and not mask[:, :x0].any() and not mask[:, x1:].any()
    tensor, peak = device_image(img[y0:y1, x0:x1 - 5], "cpu")
    with pytest.raises(ValueError, match="outside the window"):
        paste_into(tensor, restored_faces, PasteConfig(), peak=peak, origin=(x0, y0), image_size=img.shape[:2])


def test_device_paste_without_a_pasted_face_returns_the_image_unchanged(family, restored_faces):
    from restorer_core.restore.paste import paste_window

    kept = [f.with_restored(f.restored) for f in restored_faces]
    for f in kept:
        f.info["strength"] = 0.0
    out, mask = paste_window(family, kept, PasteConfig(), False, True, "cpu")
    assert np.array_equal(out, family) and out is not family and not mask.any()


def test_paste_frame_pastes_a_tensor_frame_in_place_like_the_array_path(family, restored_faces):
    """Paste Faces Back's way: a frame of an IMAGE batch (a float tensor view) pasted in place,
    window by window, gives paste_faces' pixels and mask on the same frame as a float32 array;
    the other frame of the batch is not touched."""
    from restorer_core.restore.paste import paste_frame

    img = family.astype(np.float32) / 255.0
    batch = torch.from_numpy(np.stack([img, img[::-1].copy()]))
    before = batch.clone()
    mask = paste_frame(batch[0], restored_faces, PasteConfig(), device="cpu")
    expected, expected_mask = paste_faces(img, restored_faces, PasteConfig())
    assert torch.equal(batch[0], torch.from_numpy(expected)) and torch.equal(mask, torch.from_numpy(expected_mask))
    assert torch.equal(batch[1], before[1]) and not torch.equal(batch[0], before[0])
    with pytest.raises(ValueError, match="float image tensor"):
        paste_frame(torch.zeros(8, 8, 3, dtype=torch.uint8), restored_faces)


def test_batch_transfers_give_the_per_face_values(restored_faces):
    """On a GPU a batch's crops go up, and its restored crops come back, in one copy each
    (crops_to_device / tensors_to_host batched): the same values as one copy per face; mixed
    sizes fall back to one copy per face."""
    from restorer_core.restore.pipeline import crop_tensor, crops_to_device, tensors_to_host

    faces = list(restored_faces)
    one = crops_to_device(faces, "cpu", batched=False)
    together = crops_to_device(faces, "cpu", batched=True)
    assert all(torch.equal(a, b) and torch.equal(a, crop_tensor(f, "cpu")) for a, b, f in zip(one, together, faces))
    back = [t.permute(1, 2, 0) * 0.5 for t in together]
    host_one, host_together = tensors_to_host(back, batched=False), tensors_to_host(back, batched=True)
    assert all(np.array_equal(a, b) and a.dtype == np.float32 for a, b in zip(host_one, host_together))
    mixed = back[:1] + [back[1][:-3, :-3]]
    assert [a.shape for a in tensors_to_host(mixed, batched=True)] == [tuple(t.shape) for t in mixed]
    assert tensors_to_host([], batched=True) == []

"""YuNet in torch (faces/detect/yunet_net.py, yunet_torch.py): the shipped ONNX network's outputs,
OpenCV's detections, batched; and how pipelines and nodes pick it (detect_device)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from restorer_core.faces.detect import create_detector, detect_device
from restorer_core.faces.detect.base import downscale_for_detection
from restorer_core.faces.detect.yunet_net import ONNX_FILE, TORCH_FILE, load_yunet, weights_from_onnx
from restorer_core.faces.detect.yunet_torch import YuNetTorchDetector, _resize_area
from restorer_core.faces.warp_torch import area_weights

FAMILY = Path(__file__).resolve().parents[1] / "examples" / "family_10045.png"


@pytest.fixture(scope="module")
def family():
    return cv2.cvtColor(cv2.imread(str(FAMILY)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detectors():
    cpu = create_detector("yunet", retry=False)
    return cpu, YuNetTorchDetector(cpu.config)


def test_shipped_weights_are_the_onnx_files_own():
    from safetensors.torch import load_file

    shipped, converted = load_file(str(TORCH_FILE)), weights_from_onnx(ONNX_FILE)
    assert shipped.keys() == converted.keys() and len(shipped) == 106
    for k in shipped:
        torch.testing.assert_close(shipped[k], converted[k], rtol=0, atol=0)


def test_network_outputs_equal_onnxruntime_on_a_photo(family):
    import onnxruntime as ort

    blob = cv2.resize(family[..., ::-1], (640, 640)).transpose(2, 0, 1)[None].astype(np.float32)
    sess = ort.InferenceSession(str(ONNX_FILE), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = dict(zip(names, sess.run(None, {"input": blob})))
    with torch.no_grad():
        out = load_yunet()(torch.from_numpy(blob))
    assert set(out) == set(names)
    for k in names:
        assert out[k].shape == ref[k].shape
        np.testing.assert_allclose(out[k].numpy(), ref[k], atol=1e-4, rtol=0)


def test_area_weights_shrink_as_opencv_inter_area(family):
    w = area_weights(10, 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)  # each output averages
    np.testing.assert_allclose(w[0, :3], [0.4, 0.4, 0.2], atol=1e-6)  # span [0, 2.5)
    big = cv2.resize(family, (1920, 1080))
    for max_side in (1600, 960):  # ratios 0.833 and 0.5
        small, _ = downscale_for_detection(big, max_side)
        x = torch.from_numpy(big).permute(2, 0, 1)[None].float()
        ours = _resize_area(x, small.shape[1::-1])[0].permute(1, 2, 0).numpy().astype(np.int16)
        diff = np.abs(ours - small.astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02


@pytest.mark.parametrize("size", [None, (1920, 1080), (2400, 1800)])
def test_detections_equal_the_opencv_backend(family, detectors, size):
    cpu, ours = detectors
    img = family if size is None else cv2.resize(family, size)
    a, b = cpu.detect(img), ours.detect(img)
    c = ours.detect_batch([img])[0]  # shrinking on the device, not with cv2
    assert len(a) == len(b) == len(c) >= 1
    for x, y, z in zip(a, b, c):
        np.testing.assert_allclose(y.landmarks, x.landmarks, atol=1e-3)
        np.testing.assert_allclose(z.landmarks, x.landmarks, atol=0.1)  # 8-bit rounding of a few pixels
        np.testing.assert_allclose(z.box, x.box, atol=0.2)
        assert abs(z.score - x.score) < 5e-3


def test_batch_mixes_sizes_and_keeps_order(family, detectors):
    cpu, ours = detectors
    images = [family, np.zeros((4, 4, 3), np.uint8), family[::2, ::2].copy(), family.copy(),
              np.full((300, 200, 3), 90, np.uint8)]
    ours.batch = 2  # two images of one size in one pass, then the next pass
    try:
        got = ours.detect_batch(images)
    finally:
        ours.batch = 8
    assert [len(g) for g in got] == [len(cpu.detect(im)) for im in images] == [3, 0, 3, 3, 0]
    for g, im in zip(got, images):
        for x, y in zip(g, cpu.detect(im)):
            np.testing.assert_allclose(x.landmarks, y.landmarks, atol=1e-3)


def test_retry_batch_runs_the_second_pass_only_where_the_first_found_nothing(family):
    from restorer_core.faces.detect.retry import RetryDetector
    from restorer_core.train.degrade import degrade_fixed

    retry = create_detector("yunet")
    assert isinstance(retry, RetryDetector) and not retry.thread_safe  # OpenCV backends: a pool per thread
    crop = cv2.resize(family[100:700, 150:650], (256, 256))
    blurred = degrade_fixed(crop, 16, 1)
    images = [family, blurred]
    assert [len(f) for f in retry.detect_batch(images)] == [len(retry.detect(im)) for im in images]
    torch_retry = RetryDetector(YuNetTorchDetector(retry.primary.config), YuNetTorchDetector(retry.permissive.config))
    assert torch_retry.thread_safe
    for a, b in zip(torch_retry.detect_batch(images), retry.detect_batch(images)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.1)


def test_detect_device_policy():
    assert detect_device("yunet", None) is None
    assert detect_device("yunet", "cpu") is None  # OpenCV is the faster CPU path
    assert detect_device("YuNet", "cuda:1") == torch.device("cuda:1")
    assert detect_device("scrfd", "cuda") is None  # no torch implementation
    assert create_detector("yunet", retry=False, device="cpu").__class__.__name__ == "YuNetDetector"


def test_pipeline_locates_with_a_batched_detector_as_with_opencv(family):
    """A pipeline given the batched detector (what a CUDA pipeline gets) finds, numbers and
    crops the faces of a chunk as the OpenCV detector does."""
    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions
    from tiny_models import tiny_config

    frames = [family, family[:, ::-1].copy(), cv2.resize(family, (600, 880))]
    located = {}
    for kind in ("opencv", "torch"):
        pipe = FaceRestorePipeline(OneStepRestorer(tiny_config()).eval(), cpu_workers=2)
        options = RestoreOptions(crop_size=64)
        if kind == "torch":
            cpu = create_detector("yunet")
            pipe.add_detector(options, torch_retry(cpu), factory=lambda: None)
        located[kind] = pipe.locate_images(frames, None, options, ["a", "b", "c"]).faces
    assert len(located["torch"]) == len(located["opencv"]) == 9
    for x, y in zip(located["torch"], located["opencv"]):
        assert (x.image_index, x.face_index) == (y.image_index, y.face_index)
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.1)


def torch_retry(cpu):
    from restorer_core.faces.detect.retry import RetryDetector

    return RetryDetector(YuNetTorchDetector(cpu.primary.config), YuNetTorchDetector(cpu.permissive.config))

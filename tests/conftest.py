"""Shared fixtures: the repo on sys.path, the shared data folder, small synthetic faces.

SHARED_DIR (environment) points at the team's shared folder; it defaults to ../shared next to
the repository. Tests that need it are skipped when it is missing, and the end of the run says
how many and why (also under -q); under CI (CI=true) they fail instead, so CI cannot pass green
without them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _shared_dir() -> Path:
    return Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared")).expanduser()


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


MISSING_SHARED = "shared data missing: "


def missing_shared(reason: str) -> None:
    """A test needs shared data that is not there: fail under CI, otherwise skip (the summary
    at the end of the run counts these skips)."""
    if running_in_ci():
        pytest.fail(f"{MISSING_SHARED}{reason} (CI=true: tests needing the shared data must run, not skip)",
                    pytrace=False)
    pytest.skip(MISSING_SHARED + reason)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say, even under -q, how many tests were skipped for missing shared data, and how to run them."""
    counts: dict = {}
    for rep in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(rep, "longrepr", None)
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(MISSING_SHARED):
            key = reason[len(MISSING_SHARED):]
            counts[key] = counts.get(key, 0) + 1
    for reason, count in counts.items():
        terminalreporter.write_line(f"SKIPPED {count} test(s) needing shared data: {reason}. Set SHARED_DIR "
                                    "to the shared folder to run them (under CI=true they fail).",
                                    yellow=True, bold=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not path.is_dir():
        missing_shared(f"shared data folder not found at {path}")
    return path


@pytest.fixture(scope="session")
def real_lq_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "real_lq"
    if not path.is_dir():
        missing_shared(f"real low-quality photos not found at {path}")
    return path


@pytest.fixture(scope="session")
def scrfd_model(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "scrfd" / "scrfd_500m_bnkps.onnx"
    if not path.is_file():
        missing_shared(f"SCRFD test model not found at {path}")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    return path


@pytest.fixture(scope="session")
def yunet():
    from restorer_core.faces.detect import create_detector

    return create_detector("yunet")


@pytest.fixture(scope="session")
def face_rgb(real_lq_dir: Path) -> np.ndarray:
    """A real single-face photo (CodeFormer demo 04.jpg, 225x225, one face near the centre)."""
    from restorer_core.io.imageio import load_image

    return load_image(real_lq_dir / "codeformer" / "whole_imgs" / "04.jpg").rgb8


def synthetic_image(h: int, w: int, channels: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus mild texture: interpolation error stays small and countable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [
        0.5 + 0.4 * np.sin(xx / 37.0 + c) * np.cos(yy / 53.0 - c) + 0.05 * rng.standard_normal((h, w))
        for c in range(max(channels, 1))
    ]
    img = np.clip(np.stack(planes, axis=2), 0, 1)
    img = cv2_blur(img)
    peak = 255 if dtype == np.uint8 else 65535 if dtype == np.uint16 else 1
    out = np.rint(img * peak).astype(dtype) if peak != 1 else img.astype(dtype)
    return out[..., 0] if channels == 0 else out


def cv2_blur(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (5, 5), 1.0).reshape(img.shape)


@pytest.fixture(scope="session")
def make_image():
    """Factory: make_image(h, w, channels=3, dtype=np.uint8, seed=0); channels=0 gives HxW."""
    return synthetic_image


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny random-weight restorer saved in the project format (tests/tiny_models.py)."""
    import torch

    from restorer_core.loaders.project_format import save_restorer
    from restorer_core.models.restorer import OneStepRestorer
    from tiny_models import tiny_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_restorer(path, OneStepRestorer(tiny_config()))
    return path

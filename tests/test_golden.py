"""Outputs unchanged: the current code gives the pixels recorded in tests/data (see
tests/golden_outputs.py) for seeded tiny restorers in every mode, through the plain forward and
through the speed runner, and for the embedded default model on examples/family_10045.png."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import golden_outputs as golden


@pytest.fixture(scope="module")
def recorded() -> dict:
    with np.load(golden.TINY_FILE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def models(recorded) -> dict:
    built = {}
    torch.set_num_threads(1)
    for name in golden.tiny_models():
        model = golden.build_tiny(name)
        assert golden.tensors_digest(model) == str(recorded[f"{name}/weights"]), (
            f"the seeded tiny {name} restorer starts from other weights than when the outputs were "
            "recorded (module construction order changed?); its pixels cannot be compared")
        built[name] = model
    return built


def _key(name, mode, with_refs):
    return f"{name}/{mode}/{'refs' if with_refs else 'norefs'}"


@pytest.mark.parametrize("name,mode,with_refs", golden.TINY_CASES)
def test_tiny_forward_gives_the_recorded_pixels(models, recorded, name, mode, with_refs):
    out = golden.run_tiny_case(models[name], mode, with_refs)
    np.testing.assert_allclose(out, recorded[_key(name, mode, with_refs)], rtol=0, atol=2e-5)


@pytest.mark.parametrize("name,mode,with_refs", golden.TINY_CASES)
def test_tiny_speed_runner_gives_the_recorded_pixels(models, recorded, name, mode, with_refs):
    """The runner the CLI and nodes use (speed auto: fused upsampling on the CPU)."""
    from restorer_core.restore.pipeline import make_runner

    model = models[name]
    runner = make_runner(model, "auto")
    out = golden.run_tiny_case(model, mode, with_refs,
                               lambda m, lq, kv, md, gens: runner(lq, kv, md, generator=gens))
    np.testing.assert_allclose(out, recorded[_key(name, mode, with_refs)], rtol=0, atol=2e-5)


def test_default_model_restores_the_example_as_recorded(tmp_path):
    from safetensors import safe_open

    from restorer_core.model_zoo import DEFAULT_MODEL_PATH

    with np.load(golden.FAMILY_FILE) as data:
        expected, weights = data["delta"], str(data["weights_sha256"])
    with safe_open(str(DEFAULT_MODEL_PATH), framework="pt") as f:
        current = (f.metadata() or {}).get("weights_sha256", "")
    assert current == weights, ("the embedded default model changed since the pixels were recorded; "
                                "re-record them with `PYTHONPATH=. python tests/golden_outputs.py`")
    delta = golden.family_delta(golden.restore_family_with_cli(tmp_path))
    diff = np.abs(delta.astype(np.int32) - expected.astype(np.int32))
    assert int(np.count_nonzero(expected)) > 10_000  # the faces were restored when recorded
    # same machine: identical; another CPU may round a few pixels the other way
    assert int(diff.max()) <= 1 and np.count_nonzero(diff) <= 0.001 * diff.size, (int(diff.max()), np.count_nonzero(diff))

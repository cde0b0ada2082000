"""benchmarks/norefs_structure.py scores policies by interpolating each face's measured similarity
between the strengths it ran at; the policy it picked must be what the library applies."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import norefs_structure as ns  # noqa: E402


def test_interpolation_hits_the_measured_points_and_is_linear_between():
    curves = np.array([[0.40, 0.42, 0.41, 0.38], [0.50, 0.49, 0.47, 0.45]])  # at 0, .25, .5, .75
    assert ns.STRENGTHS == (0.25, 0.5, 0.75)
    np.testing.assert_allclose(ns.interpolate(curves, np.array([0.0, 0.75])), [0.40, 0.45])
    np.testing.assert_allclose(ns.interpolate(curves, np.array([0.5, 0.25])), [0.41, 0.49])
    np.testing.assert_allclose(ns.interpolate(curves, np.array([0.375, 0.125])), [0.415, 0.495])


def test_the_benchmark_policy_is_the_library_policy():
    from restorer_core.restore.identity_gate import (NO_REFS_STRENGTH, STRUCTURE_FULL, STRUCTURE_KEEP,
                                                     no_refs_scale, structure_factor)

    structure = np.linspace(0.3, 1.1, 41)
    bench = NO_REFS_STRENGTH * ns.smoothstep((structure - STRUCTURE_KEEP) / (STRUCTURE_FULL - STRUCTURE_KEEP))
    library = [no_refs_scale(True, False, NO_REFS_STRENGTH) * structure_factor(True, False, s) for s in structure]
    np.testing.assert_allclose(bench, library, atol=1e-12)
    assert (NO_REFS_STRENGTH, STRUCTURE_KEEP, STRUCTURE_FULL) in [(t, k, f) for t in ns.TOPS for k, f in ns.GATES]
    assert structure_factor(True, False, STRUCTURE_KEEP) == 0.0 and structure_factor(True, False, STRUCTURE_FULL) == 1.0
    assert structure_factor(True, False, None) == 1.0 and structure_factor(True, True, 0.1) == 1.0
    assert structure_factor(False, False, 0.1) == 1.0 and structure_factor(True, False, 0.1, gate=False) == 1.0
    assert structure_factor(True, False, (STRUCTURE_KEEP + STRUCTURE_FULL) / 2) == pytest.approx(0.5)

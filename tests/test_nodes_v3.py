"""The nodes on ComfyUI's V3 node API (comfy_api.v0_0_2) against the classic registration.

A ComfyUI with comfy_api loads the pack through comfy_entrypoint; an older one through
NODE_CLASS_MAPPINGS. Both must offer the same nodes with the same ids, titles, inputs (names,
order, types, defaults, ranges, tooltips: what saved workflows' widget values are matched
against), outputs and caching, and run the same code. Loaded as tests/comfy_stub/harness.py
loads them (ComfyUI's load_custom_node).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

STUB = Path(__file__).resolve().parent / "comfy_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

import harness  # noqa: E402
from comfy_api.internal import first_real_override  # noqa: E402
from comfy_api.latest import io  # noqa: E402

BLAKE = harness.REPO_ROOT / "example_workflows" / "inputs" / "blake_lively.jpg"
DETECT = dict(detector="yunet", detector_model="default", threshold=0.6, selection="all", max_faces=0,
              face_indices="0", min_face_size=0, similarity_threshold=0.4, track_faces=True, crop_size=128)
IDS = ["OneStepLoadFaceRestorer", "OneStepDetectFaces", "OneStepReferenceBank", "OneStepReferenceBankFromImages",
       "OneStepRestore", "OneStepPasteFacesBack", "OneStepRestoreFaces", "OneStepFaceSimilarity"]


@pytest.fixture(scope="module")
def v3_pack():
    return harness.load_pack(comfy_api=True)


@pytest.fixture(scope="module")
def classic_pack():
    return harness.load_pack(comfy_api=False)


@pytest.fixture(scope="module")
def v3(v3_pack):
    return harness.registered_nodes(v3_pack)


@pytest.fixture(scope="module")
def classic(classic_pack):
    return harness.registered_nodes(classic_pack)


def as_classic(entry: tuple) -> tuple:
    """A V3 input in its V1 form -> the classic form: ("COMBO", {"options": [...]}) -> ([...], {...})."""
    kind, opts = entry[0], dict(entry[1]) if len(entry) > 1 else {}
    if kind == "COMBO":
        assert opts.pop("multiselect") is False
        return list(opts.pop("options")), opts
    return kind, opts


def test_each_comfyui_gets_exactly_one_registration(v3_pack, classic_pack):
    """ComfyUI takes NODE_CLASS_MAPPINGS whenever it is set, so the V3 pack must not define it."""
    assert getattr(v3_pack, "NODE_CLASS_MAPPINGS", None) is None and callable(v3_pack.comfy_entrypoint)
    assert classic_pack.NODE_CLASS_MAPPINGS and not hasattr(classic_pack, "comfy_entrypoint")
    assert v3_pack.WEB_DIRECTORY == classic_pack.WEB_DIRECTORY == "./web"


def test_v3_nodes_are_comfy_nodes_with_the_classic_ids_and_titles(v3, classic):
    (v3_classes, v3_names), (classic_classes, classic_names) = v3, classic
    assert list(v3_classes) == list(classic_classes) == IDS
    assert v3_names == classic_names and len(set(v3_names.values())) == len(IDS)
    for node_id, cls in v3_classes.items():
        assert issubclass(cls, io.ComfyNode) and cls.FUNCTION == "EXECUTE_NORMALIZED"
        assert first_real_override(cls, "define_schema") is not None and first_real_override(cls, "execute") is not None
        assert not issubclass(classic_classes[node_id], io.ComfyNode)


def test_v3_inputs_and_outputs_are_the_classic_ones(v3, classic):
    """Same inputs in the same order (the frontend lays out a saved workflow's widget values by
    it), each with the same type, default, range and tooltip; same outputs, names, list flags,
    tooltips, description and category."""
    for node_id, cls in classic[0].items():
        new = v3[0][node_id]
        old_inputs, new_inputs = cls.INPUT_TYPES(), new.INPUT_TYPES()
        assert set(new_inputs) == set(old_inputs)
        for category, entries in old_inputs.items():
            assert list(new_inputs[category]) == list(entries), f"{node_id} {category} order"
            for name, entry in entries.items():
                kind, opts = entry[0], entry[1] if len(entry) > 1 else {}
                assert as_classic(new_inputs[category][name]) == (kind, opts), f"{node_id}.{name}"
        assert list(new.RETURN_TYPES) == list(cls.RETURN_TYPES), node_id
        assert list(new.RETURN_NAMES) == list(cls.RETURN_NAMES), node_id
        assert list(new.OUTPUT_TOOLTIPS) == list(cls.OUTPUT_TOOLTIPS), node_id
        assert list(new.OUTPUT_IS_LIST) == list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)))
        assert new.DESCRIPTION == cls.DESCRIPTION and new.CATEGORY == cls.CATEGORY == "face restore/one-step"
    assert v3[0]["OneStepFaceSimilarity"].OUTPUT_IS_LIST == [True, False]


def test_output_ids_differ_from_input_ids_and_names_stay(v3):
    """V3 refuses a schema whose output id equals an input id (One-Step Restore takes and gives
    `faces`); the id differs, the name shown stays."""
    schema = v3[0]["OneStepRestore"].GET_SCHEMA()
    ids = {i.id for i in schema.inputs}
    assert "faces" in ids and [o.id for o in schema.outputs][0] != "faces"
    assert [o.display_name for o in schema.outputs] == ["faces", "restored_crops", "report"]
    assert all(o.id not in ids for o in schema.outputs)


def test_v3_execute_runs_the_same_node_code(v3, classic):
    image = harness.image_tensor(BLAKE)
    old = classic[0]["OneStepDetectFaces"]
    faces_old, crops_old, mask_old, report_old = getattr(old(), old.FUNCTION)(image, **DETECT)
    new = v3[0]["OneStepDetectFaces"]
    out = getattr(new(), new.FUNCTION)(image=image, **DETECT)
    assert isinstance(out, io.NodeOutput) and len(out.args) == 4
    faces_new, crops_new, mask_new, report_new = out.args
    assert report_new == report_old and len(faces_new.faces) == len(faces_old.faces) == 2
    np.testing.assert_array_equal(crops_new.numpy(), crops_old.numpy())
    np.testing.assert_array_equal(mask_new.numpy(), mask_old.numpy())


def test_v3_refuses_a_value_that_is_not_a_choice(v3):
    new = v3[0]["OneStepDetectFaces"]
    image = harness.image_tensor(BLAKE)
    with pytest.raises(ValueError, match="detector 'retina' is not one of the choices .*yunet"):
        new.execute(image=image, **{**DETECT, "detector": "retina"})


def test_only_the_folder_bank_fingerprints_its_inputs(v3, classic, tmp_path):
    """ComfyUI asks fingerprint_inputs (V3) / IS_CHANGED (classic) whether to re-run a node; the
    folder bank's changes with the folder's images, and no other node has one (so ComfyUI serves
    them from its cache)."""
    from PIL import Image

    Image.open(BLAKE).save(tmp_path / "a.png")
    for node_id, cls in v3[0].items():
        has = first_real_override(cls, "fingerprint_inputs") is not None
        assert has == (node_id == "OneStepReferenceBank") == hasattr(classic[0][node_id], "IS_CHANGED"), node_id
    new, old = v3[0]["OneStepReferenceBank"], classic[0]["OneStepReferenceBank"]
    before = new.fingerprint_inputs(folder=str(tmp_path), detector="yunet")
    assert before == old.IS_CHANGED(folder=str(tmp_path), detector="yunet")
    Image.open(BLAKE).crop((0, 0, 300, 300)).save(tmp_path / "b.png")
    assert new.fingerprint_inputs(folder=str(tmp_path), detector="yunet") != before


def test_workflow_builder_titles_are_the_registered_ones(v3):
    sys.path.insert(0, str(harness.REPO_ROOT / "example_workflows"))
    try:
        import build_workflows
    finally:
        sys.path.pop(0)
    names = build_workflows.display_names()
    assert {k: names[k] for k in IDS} == v3[1]


def test_comfyui_without_the_pinned_api_version_gets_classic_nodes(classic_pack, monkeypatch):
    """A comfy_api without v0_0_2 (ComfyUI before the V3 API): v3_entrypoint says None, so the
    pack serves NODE_CLASS_MAPPINGS; an ImportError of the pack's own module is raised, not hidden."""
    nodes_pkg = sys.modules[f"{classic_pack.__name__}.nodes"]
    assert not hasattr(nodes_pkg, "v3")  # its import failed when the pack loaded without comfy_api
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "comfy_api.v0_0_2", None)
        assert nodes_pkg.v3_entrypoint() is None
    with monkeypatch.context() as m:
        m.setitem(sys.modules, f"{classic_pack.__name__}.nodes.v3", None)
        with pytest.raises(ImportError, match="nodes.v3"):
            nodes_pkg.v3_entrypoint()

"""The shipped workflows: well-formed for the ComfyUI frontend, consistent with the nodes'
real inputs, and (API copies of workflows 2-4) runnable end to end through the comfy stand-in.

Core node inputs come from tests/comfy_stub/core_nodes.py, which copies ComfyUI's own
INPUT_TYPES; this pack's from its node classes. When the embedded default restorer or the
identity embedder is not shipped yet, random-weight tiny ones stand in for them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

STUB = Path(__file__).resolve().parent / "comfy_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

import comfy.model_management as mm  # noqa: E402
import comfy.utils  # noqa: E402
import core_nodes  # noqa: E402
import folder_paths  # noqa: E402
import harness  # noqa: E402
from execution import Executor, PromptError, types_match  # noqa: E402

WORKFLOWS = harness.REPO_ROOT / "example_workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
RUNNABLE = ["01_old_photo_visual_prompt", "02_character_consistency_batch", "03_video_frames_one_bank"]
VIRTUAL = {"Note", "MarkdownNote"}  # frontend-only nodes: in UI files, never in API prompts
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")


# Slow runs of pack behaviour that does not depend on the node API: on the V3 API only. Every
# other test (the static checks, running workflow 01, validation, the fingerprint) runs both.
V3_ONLY = {"test_character_workflow_runs_a_mixed_size_batch_against_one_bank",
           "test_frames_workflow_keeps_face_numbers_and_restores_one_person",
           "test_graph_switching_restorer_recomputes_the_reference_cache",
           "test_graph_cancelled_mid_run_raises_interrupt_and_resumes_from_cache",
           "test_graph_with_an_empty_bank_stops_with_a_clear_error",
           "test_graph_without_faces_passes_the_image_through"}


def pytest_generate_tests(metafunc):
    if "api" in metafunc.fixturenames:
        apis = ["v3"] if metafunc.function.__name__ in V3_ONLY else ["v3", "classic"]
        metafunc.parametrize("api", apis, scope="module")


@pytest.fixture(scope="module")
def pack(api):
    """The pack as ComfyUI with the V3 node API loads it (comfy_entrypoint), or as an older
    ComfyUI does (NODE_CLASS_MAPPINGS)."""
    return harness.load_pack(comfy_api=api == "v3")


@pytest.fixture(scope="module")
def mappings(pack):
    return {**core_nodes.NODE_CLASS_MAPPINGS, **harness.registered_nodes(pack)[0]}


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def choices(entry: tuple):
    """A dropdown's choices (classic: the list is the type; V3: ("COMBO", {"options": [...]})), else None."""
    if isinstance(entry[0], list):
        return entry[0]
    if entry[0] == "COMBO":
        return entry[1].get("options", [])
    return None


def is_widget(entry: tuple) -> bool:
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    return (choices(entry) is not None or kind in WIDGET_KINDS) and not opts.get("forceInput", False)


def ui_widgets_to_inputs(node: dict, cls: type) -> dict:
    """A UI node's widgets_values -> {input name: value}, as the frontend lays widgets out:
    required then optional inputs in order; a control value after an INT seed (or any INT with
    control_after_generate); an upload button value after a combo with image_upload."""
    values = list(node.get("widgets_values", []))
    spec = cls.INPUT_TYPES()
    out = {}
    for category in ("required", "optional"):
        for name, entry in spec.get(category, {}).items():
            if not is_widget(entry):
                continue
            opts = entry[1] if len(entry) > 1 else {}
            assert values, f"node {node['id']} ({node['type']}): no widget value for {name}"
            out[name] = values.pop(0)
            if entry[0] == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
                control = values.pop(0)
                assert control in CONTROL_VALUES, f"node {node['id']}: bad control_after_generate {control!r}"
            if choices(entry) is not None and opts.get("image_upload"):
                assert values.pop(0) == "image", f"node {node['id']}: LoadImage needs its upload widget value"
    assert not values, f"node {node['id']} ({node['type']}): {len(values)} widget values too many: {values}"
    return out


def check_value(node: dict, name: str, entry: tuple, value) -> None:
    kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
    where = f"node {node['id']} ({node['type']}).{name} = {value!r}"
    if node["type"] == "LoadImage" and name == "image":
        assert (WORKFLOWS / "inputs" / value).is_file(), f"{where}: not shipped in example_workflows/inputs"
    elif node["type"] == "CheckpointLoaderSimple" and name == "ckpt_name":
        assert Path(value).suffix in folder_paths.supported_pt_extensions, where
    elif choices(entry) is not None:
        assert value in choices(entry), f"{where}: not one of {choices(entry)[:12]}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert opts.get("min", -2**63) <= value <= opts.get("max", 2**64), where
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert opts.get("min", -1e30) <= value <= opts.get("max", 1e30), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where


# ----------------------------------------------------------------------------- static checks


def test_every_workflow_has_an_api_copy():
    names = [p.stem for p in UI_FILES]
    assert len(names) == 4
    assert names == sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json"))


def test_workflow_files_are_what_the_builder_writes():
    sys.path.insert(0, str(WORKFLOWS))
    try:
        import build_workflows
    finally:
        sys.path.remove(str(WORKFLOWS))
    for name, (ui, api) in build_workflows.build_all().items():
        assert load_json(WORKFLOWS / f"{name}.json") == ui, f"{name}: run example_workflows/build_workflows.py"
        assert load_json(WORKFLOWS / "api" / f"{name}.json") == api, f"{name}: run example_workflows/build_workflows.py"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_links_and_widgets(path, mappings):
    wf = load_json(path)
    assert wf["version"] == 0.4 and isinstance(wf["groups"], list)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for node in wf["nodes"]:
        assert node["type"] in mappings or node["type"] in VIRTUAL, f"unknown node type {node['type']}"
        assert node["mode"] == 0 and len(node["pos"]) == 2 and len(node["size"]) == 2
        if node["type"] in VIRTUAL:
            assert all(isinstance(v, str) for v in node.get("widgets_values", []))
            continue
        cls = mappings[node["type"]]
        spec = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
        for name, value in ui_widgets_to_inputs(node, cls).items():
            check_value(node, name, spec[name], value)
        sockets = [s["name"] for s in node.get("inputs", [])]
        for name in cls.INPUT_TYPES().get("required", {}):
            if not is_widget(spec[name]):
                assert name in sockets, f"node {node['id']}: required input {name} has no socket"
        for socket in node.get("inputs", []):
            assert types_match(socket["type"], spec[socket["name"]][0]) or spec[socket["name"]][0] == "*"
            if socket["link"] is None:
                assert socket["name"] in cls.INPUT_TYPES().get("optional", {}), \
                    f"node {node['id']}: required input {socket['name']} is not connected"
        outputs = node.get("outputs", [])
        assert [o["type"] for o in outputs] == list(cls.RETURN_TYPES)
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        source, target = nodes[src], nodes[dst]
        assert mappings[source["type"]].RETURN_TYPES[src_slot] == kind
        assert link_id in (source["outputs"][src_slot]["links"] or [])
        socket = target["inputs"][dst_slot]
        assert socket["link"] == link_id and socket["type"] == kind or socket["type"] == "*"
        declared = {**mappings[target["type"]].INPUT_TYPES().get("required", {}),
                    **mappings[target["type"]].INPUT_TYPES().get("optional", {})}[socket["name"]][0]
        assert types_match(kind, declared), f"link {link_id}: {kind} into {target['type']}.{socket['name']}"
    for node in wf["nodes"]:
        for i, out in enumerate(node.get("outputs", [])):
            for link_id in out["links"] or []:
                assert any(l[0] == link_id and l[1] == node["id"] and l[2] == i for l in wf["links"])
    restorers = [n for n in wf["nodes"] if n["type"] == "OneStepLoadFaceRestorer"]
    assert restorers and all(n["widgets_values"][0] == "default (embedded)" for n in restorers)


# ----------------------------------------------------------------------------- layout
# What a person sees on opening a file in the ComfyUI frontend: the layout rules of issue 10.


@pytest.fixture(scope="module")
def builder():
    sys.path.insert(0, str(WORKFLOWS))
    try:
        import build_workflows
    finally:
        sys.path.remove(str(WORKFLOWS))
    return build_workflows


def node_rect(node: dict, title_h: float) -> tuple:
    """(x0, y0, x1, y1) of a node as drawn: its title bar sits above `pos`."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - title_h, x + w, y + h


def frontend_widgets(cls: type, builder) -> list:
    """(label, height) of every widget the frontend draws for a node class, from its
    INPUT_TYPES: its widget inputs in order (a textarea for multiline strings), a control widget
    after a seed, an upload button and an image preview after an image_upload combo, an image
    preview on output nodes that take images (Save / Preview Image, once run)."""
    out = []
    spec = cls.INPUT_TYPES()
    for category in ("required", "optional"):
        for name, entry in spec.get(category, {}).items():
            if not is_widget(entry):
                continue
            opts = entry[1] if len(entry) > 1 else {}
            out.append((name, builder.MULTILINE_MIN_H if opts.get("multiline") else builder.WIDGET_H))
            if entry[0] == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
                out.append(("control_after_generate", builder.WIDGET_H))
            if choices(entry) is not None and opts.get("image_upload"):
                out += [("upload", builder.WIDGET_H), ("", builder.IMAGE_PREVIEW_H)]
    if getattr(cls, "OUTPUT_NODE", False) and spec.get("required", {}).get("images", ("",))[0] == "IMAGE":
        out.append(("", builder.IMAGE_PREVIEW_H))
    return out


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_nodes_are_at_least_as_big_as_the_frontend_makes_them(path, pack, mappings, builder):
    """The frontend grows a node to LGraphNode.computeSize of its real inputs (that is how the
    old files came to overlap): every saved size is at least that, from the classes themselves."""
    wf = load_json(path)
    titles = {**builder.CORE_DISPLAY_NAMES, **harness.registered_nodes(pack)[1]}
    for node in wf["nodes"]:
        if node["type"] in VIRTUAL:
            continue
        cls = mappings[node["type"]]
        spec = cls.INPUT_TYPES()
        sockets = [n for c in ("required", "optional") for n, e in spec.get(c, {}).items() if not is_widget(e)]
        outputs = list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)
        title = node.get("title") or titles[node["type"]]
        min_w, min_h = builder.frontend_min_size(title, sockets, outputs, frontend_widgets(cls, builder))
        assert node["size"][0] >= min_w and node["size"][1] >= min_h, \
            f"{path.stem} node {node['id']} ({node['type']}): size {node['size']} < frontend minimum {min_w:.0f}x{min_h:.0f}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_layout_has_no_overlaps_and_groups_hold_their_nodes(path, builder):
    wf = load_json(path)
    rects = {n["id"]: node_rect(n, builder.TITLE_H) for n in wf["nodes"]}
    ids = sorted(rects)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            ra, rb = rects[a], rects[b]
            apart = ra[2] + 10 <= rb[0] or rb[2] + 10 <= ra[0] or ra[3] + 10 <= rb[1] or rb[3] + 10 <= ra[1]
            assert apart, f"{path.stem}: nodes {a} and {b} overlap or touch: {ra} {rb}"
    groups = wf["groups"]
    assert len(groups) >= 3 and all(g["title"].strip() for g in groups)
    boxes = [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
              g["bounding"][1] + g["bounding"][3]) for g in groups]
    for i in range(len(boxes) - 1):  # a row of groups, left to right, apart
        assert boxes[i][2] < boxes[i + 1][0]
    member = {}
    for node_id, (x0, y0, x1, y1) in rects.items():
        inside = [k for k, (gx0, gy0, gx1, gy1) in enumerate(boxes)
                  if gx0 < x0 and x1 < gx1 and gy0 + builder.GROUP_TITLE_H <= y0 and y1 < gy1]
        assert len(inside) == 1, f"{path.stem}: node {node_id} is in groups {inside}, not in exactly one"
        member[node_id] = inside[0]
    for _, src, _, dst, _, _ in wf["links"]:  # data flows left to right, or within a group
        assert member[src] <= member[dst], f"{path.stem}: link {src} -> {dst} runs backwards"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_whole_graph_is_readable_on_a_1920x1080_screen(path, builder):
    """Fit view (the "." key: DragAndScale.fitToBounds, zoom 0.75) and the saved view both show
    every node at a zoom of at least 0.6, where the frontend draws node text; the saved view
    puts the graph below the menu bar and right of the sidebar, inside the window."""
    wf = load_json(path)
    rects = [node_rect(n, builder.TITLE_H) for n in wf["nodes"]]
    rects += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
               g["bounding"][1] + g["bounding"][3]) for g in wf["groups"]]
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[2] for r in rects), max(r[3] for r in rects)
    screen_w, screen_h = 1920, 960  # 1080 less the browser's own bars
    fit = min(0.75 * screen_w / (x1 - x0), 0.75 * screen_h / (y1 - y0))
    assert fit >= 0.6, f"{path.stem}: fit-view zoom {fit:.2f}"
    ds = wf["extra"]["ds"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    assert 0.6 <= scale <= 1.0
    left, top = (x0 + ox) * scale, (y0 + oy) * scale
    right, bottom = (x1 + ox) * scale, (y1 + oy) * scale
    assert left >= builder.SIDEBAR_W and top >= builder.MENU_H, (left, top)
    assert right <= screen_w and bottom <= screen_h, (right, bottom)


def test_templates_folder_is_the_one_comfyui_serves():
    """ComfyUI serves each existing template folder of a pack (example_workflows, example,
    examples, workflow, workflows, in that order) under one URL; the first registered answers.
    The workflows live in the first, and no other alias folder holds workflow files."""
    aliases = ["example_workflows", "example", "examples", "workflow", "workflows"]
    present = [a for a in aliases if (harness.REPO_ROOT / a).is_dir()]
    assert present[0] == "example_workflows" and WORKFLOWS.name == "example_workflows"
    for alias in present[1:]:
        assert not list((harness.REPO_ROOT / alias).glob("*.json")), f"{alias}/ would list templates that never load"


def test_templates_browser_order_and_thumbnails(builder):
    """ComfyUI lists `example_workflows/*.json` of a custom node as templates, with `<name>.jpg` beside
    each as its thumbnail: every workflow has a JPEG, and names sort in the order to open them
    (first one without reference photos or a checkpoint, txt2img, which needs one, last)."""
    from PIL import Image

    names = [p.stem for p in UI_FILES]
    assert names == list(builder.WORKFLOWS) and [n[:3] for n in names] == ["01_", "02_", "03_", "04_"]
    first, last = load_json(UI_FILES[0]), load_json(UI_FILES[-1])
    assert not {"CheckpointLoaderSimple", "OneStepReferenceBankFromImages"} & {n["type"] for n in first["nodes"]}
    assert "CheckpointLoaderSimple" in {n["type"] for n in last["nodes"]}
    for path in UI_FILES:
        with Image.open(path.with_suffix(".jpg")) as thumb:
            assert thumb.format == "JPEG" and thumb.size[0] == thumb.size[1] >= 256
    assert not list((WORKFLOWS / "api").glob("*.jpg"))


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_copy_matches_the_ui_workflow(path, mappings):
    """UI widgets and links, converted as the frontend does, give exactly the API prompt."""
    wf, api = load_json(path), load_json(WORKFLOWS / "api" / path.name)
    nodes = {n["id"]: n for n in wf["nodes"]}
    expected = {}
    for node in wf["nodes"]:
        if node["type"] in VIRTUAL:
            continue
        inputs = ui_widgets_to_inputs(node, mappings[node["type"]])
        for socket in node.get("inputs", []):
            if socket["link"] is not None:
                link = next(l for l in wf["links"] if l[0] == socket["link"])
                inputs[socket["name"]] = [str(link[1]), link[2]]
        expected[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    got = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert got == expected
    assert not any(nodes[int(k)]["type"] in VIRTUAL for k in api)


# ----------------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def run_env(pack):
    """Inputs copied where LoadImage looks; restorer (and identity) stand-ins when not shipped."""
    for image in (WORKFLOWS / "inputs").glob("*.jpg"):
        shutil.copyfile(image, Path(folder_paths.get_input_directory()) / image.name)
    model_zoo = harness.core(pack, "model_zoo")
    folder = Path(folder_paths.models_dir) / "face_restore_onestep"
    # other weights for each node API's run: the reference cache on disk is shared, and tests
    # check that a restorer never seen before misses it
    api, seeds = ("classic", (2, 3)) if pack.__name__.endswith("_x_classic") else ("v3", (0, 1))
    tiny = [harness.write_tiny_restorer(pack, folder / f"wf_tiny_{api}_{s}.safetensors", seed=s) for s in seeds]
    sim = sys.modules[f"{pack.__name__}.nodes.similarity"]
    saved = sim.DEFAULT_EMBEDDER_PATH
    if not saved.is_file():
        sim.DEFAULT_EMBEDDER_PATH = harness.write_random_identity(pack, Path(folder_paths.base_path) / "identity.safetensors")
        sim._IDENTITY.clear()
    yield {"default_missing": not model_zoo.DEFAULT_MODEL_PATH.is_file(), "tiny": [t.name for t in tiny]}
    sim.DEFAULT_EMBEDDER_PATH = saved
    sim._IDENTITY.clear()


def prompt_for(name: str, env: dict, model: str | None = None) -> dict:
    prompt = load_json(WORKFLOWS / "api" / f"{name}.json")
    for node in prompt.values():
        if node["class_type"] == "OneStepLoadFaceRestorer":
            if model is not None:
                node["inputs"]["model_name"] = model
            elif env["default_missing"]:
                node["inputs"]["model_name"] = env["tiny"][0]  # random-weight stand-in
    return prompt


def saved_images(executor: Executor, prompt: dict) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for node_id, uis in executor.ui.items():
        if prompt[node_id]["class_type"] != "SaveImage":
            continue
        for ui in uis:
            for item in ui["images"]:
                path = Path(folder_paths.get_output_directory()) / item["subfolder"] / item["filename"]
                out.append(np.asarray(Image.open(path)))
    return out


def node_of(prompt: dict, class_type: str, title: str | None = None) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type
                and (title is None or v["_meta"]["title"] == title))


def test_old_photo_workflow_runs(mappings, run_env):
    prompt = prompt_for("01_old_photo_visual_prompt", run_env)
    ex = Executor(mappings)
    results = ex.run(prompt)
    (image,) = saved_images(ex, prompt)
    original = np.asarray(core_nodes.LoadImage().load_image("old_photo_family.jpg")[0][0] * 255).round()
    assert image.shape == original.shape == (800, 546, 3)
    changed = np.abs(image.astype(np.float64) - original).max(axis=2) > 2
    assert changed.any() and changed.mean() < 0.2  # faces changed, the rest of the photo did not
    report = results[node_of(prompt, "OneStepDetectFaces")][3][0]
    assert "3 face(s)" in report  # min_face_size 32 drops the 22 px false detection
    restore_report = results[node_of(prompt, "OneStepRestore")][2][0]
    assert "conditioning: visual prompt" in restore_report and "references" not in restore_report
    previews = ex.ui[node_of(prompt, "PreviewImage")][0]["images"]
    assert len(previews) == 3
    ex.run(prompt)
    assert ex.executed == []  # an unchanged graph is served from the cache, as in ComfyUI


def test_character_workflow_runs_a_mixed_size_batch_against_one_bank(mappings, run_env):
    prompt = prompt_for("02_character_consistency_batch", run_env)
    ex = Executor(mappings)
    results = ex.run(prompt)
    images = saved_images(ex, prompt)
    assert len(images) == 2 and all(im.shape == (464, 700, 3) for im in images)  # ImageBatch resized image 2
    faces = results[node_of(prompt, "OneStepRestore")][0][0]
    assert {f.image_index for f in faces.faces} == {0, 1}
    assert faces.restored_count + faces.kept_count == len(faces.faces) and faces.restored_count >= 1
    scores = results[node_of(prompt, "OneStepFaceSimilarity")][0]
    assert len(scores) == len(faces.faces) and all(-1.0 <= s <= 1.0 for s in scores)
    text = ex.ui[node_of(prompt, "PreviewAny", "identity before/after")][0]["text"][0]
    assert text.count("-> restored") == len(faces.faces)


def test_frames_workflow_keeps_face_numbers_and_restores_one_person(mappings, run_env):
    prompt = prompt_for("03_video_frames_one_bank", run_env)
    # the stand-in frames are a sharp photo, which automatic strength leaves as it is: restore fully
    prompt[node_of(prompt, "OneStepRestore")]["inputs"]["auto_strength"] = False
    ex = Executor(mappings)
    results = ex.run(prompt)
    frames = saved_images(ex, prompt)
    assert len(frames) == 4
    for frame in frames[1:]:
        np.testing.assert_array_equal(frame, frames[0])  # same frame, same person, same result
    faces = results[node_of(prompt, "OneStepDetectFaces")][0][0]
    assert [(f.image_index, f.face_index) for f in faces.faces] == [(i, 1) for i in range(4)]
    assert all(float(f.box[0]) > 350 for f in faces.faces)  # face #1 is the adult on the right
    original = np.asarray(core_nodes.LoadImage().load_image("blake_lively.jpg")[0][0] * 255).round()
    diff = np.abs(frames[0].astype(np.float64) - original).max(axis=2)
    assert diff[:, 400:].max() > 2 and diff[:, :300].max() <= 1  # the child (#0) is left alone


# ----------------------------------------------------------------------------- bad input in a graph


def write_input(name: str, array: np.ndarray) -> str:
    from PIL import Image

    Image.fromarray(array).save(Path(folder_paths.get_input_directory()) / name)
    return name


def test_graph_without_faces_passes_the_image_through(mappings, run_env):
    gray = np.full((120, 160, 3), 128, np.uint8)
    gray[40:80, 60:100] = 90
    prompt = prompt_for("01_old_photo_visual_prompt", run_env)
    prompt[node_of(prompt, "LoadImage")]["inputs"]["image"] = write_input("no_face.png", gray)
    ex = Executor(mappings)
    results = ex.run(prompt)
    (image,) = saved_images(ex, prompt)
    np.testing.assert_array_equal(image, gray)
    assert "no face" in results[node_of(prompt, "OneStepDetectFaces")][3][0]


def test_graph_with_an_empty_bank_stops_with_a_clear_error(pack, mappings, run_env):
    prompt = prompt_for("03_video_frames_one_bank", run_env)
    crop = node_of(prompt, "ImageCrop")
    blank = write_input("no_face_ref.png", np.full((464, 700, 3), 200, np.uint8))
    prompt["99"] = {"class_type": "LoadImage", "inputs": {"image": blank}, "_meta": {"title": "blank"}}
    prompt[crop]["inputs"]["image"] = ["99", 0]
    with pytest.raises(harness.core(pack, "errors").BankError, match="no usable reference face"):
        Executor(mappings).run(prompt)


def test_graph_switching_restorer_recomputes_the_reference_cache(mappings, run_env):
    ex = Executor(mappings)
    first = prompt_for("03_video_frames_one_bank", run_env, model=run_env["tiny"][0])
    ex.run(first)
    second = prompt_for("03_video_frames_one_bank", run_env, model=run_env["tiny"][1])
    results = ex.run(second)
    restore = node_of(second, "OneStepRestore")
    assert restore in ex.executed and node_of(second, "OneStepReferenceBankFromImages") not in ex.executed
    report = results[restore][2][0]
    assert "cache hit" not in report and "cache miss" in report


def test_graph_with_invalid_widget_values_is_rejected(mappings, run_env):
    prompt = prompt_for("01_old_photo_visual_prompt", run_env)
    prompt[node_of(prompt, "OneStepRestore")]["inputs"]["mode"] = "sharpen"
    prompt[node_of(prompt, "OneStepPasteFacesBack")]["inputs"]["feather"] = 500.0
    del prompt[node_of(prompt, "OneStepDetectFaces")]["inputs"]["image"]
    with pytest.raises(PromptError) as info:
        Executor(mappings).run(prompt)
    kinds = {kind for _, kind, _ in info.value.errors}
    assert kinds == {"value_not_in_list", "value_bigger_than_max", "required_input_missing"}


def test_graph_cancelled_mid_run_raises_interrupt_and_resumes_from_cache(mappings, run_env):
    prompt = prompt_for("03_video_frames_one_bank", run_env)
    prompt[node_of(prompt, "OneStepRestore")]["inputs"]["batch_size"] = 1
    ex = Executor(mappings)
    seen = []

    def cancel_on_first_progress(value, total, preview, node_id=None):
        seen.append((value, total))
        mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(cancel_on_first_progress)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            ex.run(prompt)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert seen == [(1, 4)]  # one of four frames' faces restored, then it stopped
    assert not saved_images(ex, prompt)
    ex.run(prompt)
    assert node_of(prompt, "OneStepDetectFaces") not in ex.executed  # finished nodes were kept
    assert len(saved_images(ex, prompt)) == 4


def test_folder_bank_node_reruns_only_when_the_folder_changes(mappings, run_env, tmp_path):
    from PIL import Image

    Image.open(WORKFLOWS / "inputs" / "blake_lively.jpg").crop((350, 0, 700, 464)).save(tmp_path / "a.png")
    prompt = {
        "1": {"class_type": "OneStepReferenceBank",
              "inputs": {"folder": str(tmp_path), "detector": "yunet", "detector_model": "default",
                         "threshold": 0.6, "align_size": 256}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }
    ex = Executor(mappings)
    ex.run(prompt)
    ex.run(prompt)
    assert ex.executed == []
    Image.open(WORKFLOWS / "inputs" / "blake_lively.jpg").crop((0, 0, 350, 464)).save(tmp_path / "b.png")
    ex.run(prompt)
    assert ex.executed == ["1", "2"]
    assert "used b.png" in ex.ui["2"][0]["text"][0]

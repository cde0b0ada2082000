"""The pack's nodes on ComfyUI's classic node API (for ComfyUI versions without comfy_api).

Each class is made from a NodeSpec: INPUT_TYPES, RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS,
OUTPUT_IS_LIST, DESCRIPTION, CATEGORY, FUNCTION (the spec's function) and IS_CHANGED (its
fingerprint, when it has one).
"""

from __future__ import annotations

from .spec import NodeSpec


def classic_node(spec: NodeSpec) -> type:
    """A classic ComfyUI node class running spec.function."""
    attrs = {
        "__doc__": spec.description,
        "__module__": __name__,
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "FUNCTION": spec.function_name,
        "RETURN_TYPES": tuple(o.type for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in spec.outputs),
        "INPUT_TYPES": classmethod(lambda cls: spec.input_types()),
        spec.function_name: staticmethod(spec.function),
        "SPEC": spec,
    }
    if any(o.is_list for o in spec.outputs):
        attrs["OUTPUT_IS_LIST"] = tuple(o.is_list for o in spec.outputs)
    if spec.fingerprint is not None:
        attrs["IS_CHANGED"] = classmethod(lambda cls, **inputs: spec.fingerprint(**inputs))
    return type(spec.node_id, (), attrs)


def classic_mappings(specs) -> tuple[dict, dict]:
    """(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) for the specs, in their order."""
    classes = {s.node_id: classic_node(s) for s in specs}
    names = {s.node_id: s.display_name for s in specs}
    return classes, names

"""The pack's nodes on ComfyUI's V3 node API, pinned to comfy_api.v0_0_2.

Each io.ComfyNode is made from a NodeSpec: define_schema builds the io.Schema (same node id,
inputs in the same order with the same names, types, defaults, ranges and tooltips, same
outputs), execute calls the spec's function, fingerprint_inputs its fingerprint. Importing
this module fails with ImportError on a ComfyUI without that API; the classic nodes serve then.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from .spec import NodeSpec, input_kind

_CUSTOM: dict = {}  # the pack's own socket types (FACE_RESTORER, FACES, REF_BANK) as io types


def io_type(name: str):
    """The io type for a socket type name."""
    builtin = {"IMAGE": io.Image, "MASK": io.Mask, "STRING": io.String, "FLOAT": io.Float,
               "INT": io.Int, "BOOLEAN": io.Boolean}
    if name in builtin:
        return builtin[name]
    if name not in _CUSTOM:
        _CUSTOM[name] = io.Custom(name)
    return _CUSTOM[name]


def v3_input(name: str, entry: tuple, optional: bool):
    """One classic-form input -> its io Input."""
    kind = input_kind(entry)
    o = dict(entry[1]) if len(entry) > 1 else {}
    common = {"optional": optional, "tooltip": o.get("tooltip")}
    if kind == "COMBO":
        return io.Combo.Input(name, options=list(entry[0]), default=o.get("default"), **common)
    if kind == "INT":
        return io.Int.Input(name, default=o.get("default"), min=o.get("min"), max=o.get("max"),
                            step=o.get("step"), control_after_generate=o.get("control_after_generate"), **common)
    if kind == "FLOAT":
        return io.Float.Input(name, default=o.get("default"), min=o.get("min"), max=o.get("max"),
                              step=o.get("step"), **common)
    if kind == "STRING":
        return io.String.Input(name, default=o.get("default"), multiline=o.get("multiline", False), **common)
    if kind == "BOOLEAN":
        return io.Boolean.Input(name, default=o.get("default"), label_on=o.get("label_on"),
                                label_off=o.get("label_off"), **common)
    return io_type(kind).Input(name, **common)


def schema(spec: NodeSpec) -> "io.Schema":
    inputs = []
    spec_inputs = spec.input_types()
    for category in ("required", "optional"):
        for name, entry in spec_inputs.get(category, {}).items():
            inputs.append(v3_input(name, entry, optional=category == "optional"))
    taken = {i.id for i in inputs}
    outputs = [io_type(o.type).Output(o.name + "_out" if o.name in taken else o.name, display_name=o.name,
                                      tooltip=o.tooltip, is_output_list=o.is_list)
               for o in spec.outputs]  # V3 output ids must differ from the input ids; names stay
    return io.Schema(node_id=spec.node_id, display_name=spec.display_name, category=spec.category,
                     description=spec.description, inputs=inputs, outputs=outputs)


def check_choices(spec: NodeSpec, inputs: dict) -> None:
    """A dropdown value that is not one of its choices -> ValueError naming them (ComfyUI's
    prompt validation does not check the V3 COMBO type against its options in every version)."""
    spec_inputs = spec.input_types()
    for category in ("required", "optional"):
        for name, entry in spec_inputs.get(category, {}).items():
            if input_kind(entry) == "COMBO" and name in inputs and inputs[name] not in entry[0]:
                shown = ", ".join(map(str, list(entry[0])[:12])) + (", ..." if len(entry[0]) > 12 else "")
                raise ValueError(f"{spec.display_name}: {name} {inputs[name]!r} is not one of the choices "
                                 f"({shown}); pick one from the list (refresh after adding model files).")


def v3_node(spec: NodeSpec) -> type:
    """An io.ComfyNode subclass running spec.function."""

    def define_schema(cls):
        return schema(spec)

    def execute(cls, **inputs):
        check_choices(spec, inputs)
        return io.NodeOutput(*spec.function(**inputs))

    attrs = {"__doc__": spec.description, "__module__": __name__, "SPEC": spec,
             "define_schema": classmethod(define_schema), "execute": classmethod(execute)}
    if spec.fingerprint is not None:
        attrs["fingerprint_inputs"] = classmethod(lambda cls, **inputs: spec.fingerprint(**inputs))
    return type(spec.node_id, (io.ComfyNode,), attrs)


class OneStepFaceRestoreExtension(ComfyExtension):
    """The pack's nodes, for ComfyUI's extension loader."""

    def __init__(self, nodes: list):
        self.nodes = list(nodes)

    async def get_node_list(self) -> list:
        return list(self.nodes)


def entrypoint(specs) -> "callable":
    """`comfy_entrypoint` for the pack: an async function returning its extension."""
    nodes = [v3_node(s) for s in specs]

    async def comfy_entrypoint() -> OneStepFaceRestoreExtension:
        return OneStepFaceRestoreExtension(nodes)

    return comfy_entrypoint

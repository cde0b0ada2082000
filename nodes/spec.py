"""One declaration per node, served to ComfyUI through either node API.

A NodeSpec says what a node is (id, title, help, inputs, outputs) and which plain function does
its work. nodes/classic.py turns it into a classic node class (INPUT_TYPES, RETURN_TYPES,
FUNCTION), nodes/v3.py into a V3 io.ComfyNode (define_schema, execute); neither adds behaviour,
so both APIs run the same function with the same values. Imports nothing from ComfyUI.

Inputs are written in the classic form, {"required": {name: (type, options)}, "optional": {...}},
with type a list of choices for a dropdown; it is evaluated at every call, so file lists stay
current. Only the option keys in WIDGET_OPTIONS are used, and both adapters carry each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

CATEGORY = "face restore/one-step"

# Widget options the nodes use, per input type ("COMBO" is a list of choices).
WIDGET_OPTIONS = {
    "COMBO": {"default", "tooltip"},
    "INT": {"default", "min", "max", "step", "tooltip", "control_after_generate"},
    "FLOAT": {"default", "min", "max", "step", "tooltip"},
    "STRING": {"default", "multiline", "tooltip"},
    "BOOLEAN": {"default", "label_on", "label_off", "tooltip"},
}
SOCKET_OPTIONS = {"tooltip"}  # IMAGE, MASK and the pack's own types


@dataclass(frozen=True)
class Output:
    """One output socket: its type, name, tooltip, and whether it is a list (one item per face)."""

    type: str
    name: str
    tooltip: str
    is_list: bool = False


@dataclass(frozen=True)
class NodeSpec:
    """A node of the pack.

    function: does the node's work; called with the inputs by name (optional ones only when
    connected or set), returns one value per output. function_name: the classic FUNCTION name.
    fingerprint: for nodes that read files named in their inputs: inputs by name -> a value that
    changes when those files do (classic IS_CHANGED, V3 fingerprint_inputs); None otherwise.
    """

    node_id: str
    display_name: str
    description: str
    inputs: Callable[[], dict]
    outputs: tuple
    function: Callable[..., tuple]
    function_name: str
    category: str = CATEGORY
    fingerprint: Optional[Callable[..., Any]] = None

    def input_types(self) -> dict:
        """The inputs now (choices of model folders as they are on disk), checked."""
        spec = self.inputs()
        for category, entries in spec.items():
            if category not in ("required", "optional"):
                raise ValueError(f"{self.node_id}: unknown input category {category!r}")
            for name, entry in entries.items():
                check_entry(self.node_id, name, entry)
        return spec


def input_kind(entry: tuple) -> str:
    """"COMBO" for a list of choices, else the type name."""
    return "COMBO" if isinstance(entry[0], (list, tuple)) else str(entry[0])


def check_entry(node_id: str, name: str, entry: tuple) -> None:
    """An input uses only options both adapters carry (nothing is dropped silently)."""
    kind = input_kind(entry)
    opts = entry[1] if len(entry) > 1 else {}
    allowed = WIDGET_OPTIONS.get(kind, SOCKET_OPTIONS)
    extra = set(opts) - allowed
    if extra:
        raise ValueError(f"{node_id}.{name}: options {sorted(extra)} are not carried to both node APIs")
    if kind == "COMBO" and "default" in opts and opts["default"] not in entry[0]:
        raise ValueError(f"{node_id}.{name}: default {opts['default']!r} is not one of its choices")

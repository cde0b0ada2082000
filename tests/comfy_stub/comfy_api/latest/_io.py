"""comfy_api/latest/_io.py (exported as comfy_api.latest.io): the V3 node API subset this pack uses.

Kept from ComfyUI: the type classes with their io_type and Input/Output signatures (Boolean, Int,
Float, String, Combo, Image, Mask, Custom), Input.as_dict (None options pruned), Schema (its
fields, validate: unique ids across inputs and outputs, finalize: default output ids), the V1
view of a schema (INPUT_TYPES with COMBO as ("COMBO", {"options": [...]}), RETURN_TYPES,
RETURN_NAMES from the outputs' display names, OUTPUT_IS_LIST, OUTPUT_TOOLTIPS, DESCRIPTION,
CATEGORY, FUNCTION "EXECUTE_NORMALIZED"), EXECUTE_NORMALIZED's wrapping of results in
NodeOutput, and fingerprint_inputs as the V3 IS_CHANGED. Left out: dynamic inputs, hidden
inputs, lazy evaluation, async execute, the V3 info dict, ui outputs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from comfy_api.internal import _ComfyNodeInternal, _NodeOutputInternal, classproperty, prune_dict


class _ComfyType:
    Type = Any
    io_type: str = None


def comfytype(io_type: str, **kwargs):
    """Marks a class as a ComfyType with io_type bound to it and to its Input/Output classes."""

    def decorator(cls):
        cls.io_type = io_type
        for part in ("Input", "Output"):
            inner = cls.__dict__.get(part) or getattr(cls, part, None)
            if inner is not None:
                inner = type(inner.__name__, (inner,), {"Parent": cls})
                setattr(cls, part, inner)
        return cls

    return decorator


class _IO_V3:
    Parent: _ComfyType = None

    def validate(self):
        pass

    @property
    def io_type(self):
        return self.Parent.io_type


class Input(_IO_V3):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None, raw_link: bool = None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "optional": self.optional,
                           "tooltip": self.tooltip, "lazy": self.lazy, "rawLink": self.rawLink}) \
            | prune_dict(self.extra_dict)

    def get_io_type(self):
        return self.io_type


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None, raw_link: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self):
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})


class Output(_IO_V3):
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list


class ComfyTypeI(_ComfyType):
    class Input(Input):
        ...


class ComfyTypeIO(ComfyTypeI):
    class Output(Output):
        ...


def Custom(io_type: str) -> type[ComfyTypeIO]:
    """A ComfyType for a custom io_type."""

    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        ...

    return CustomComfyType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: bool = None, label_on: str = None, label_off: str = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.label_on = label_on
            self.label_off = label_off

        def as_dict(self):
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: int = None, min: int = None, max: int = None, step: int = None,
                     control_after_generate: bool = None, display_mode=None, socketless: bool = None,
                     force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None})


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: float = None, min: float = None, max: float = None, step: float = None,
                     round: float = None, display_mode=None, socketless: bool = None, force_input: bool = None,
                     extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                   "round": self.round, "display": self.display_mode})


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     multiline=False, placeholder: str = None, default: str = None, dynamic_prompts: bool = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link)
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts

        def as_dict(self):
            return super().as_dict() | prune_dict({"multiline": self.multiline, "placeholder": self.placeholder,
                                                   "dynamicPrompts": self.dynamic_prompts})


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options: list = None, display_name: str = None, optional=False,
                     tooltip: str = None, lazy: bool = None, default=None, control_after_generate: bool = None,
                     upload=None, image_folder=None, remote=None, socketless: bool = None, extra_dict=None,
                     raw_link: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None, extra_dict,
                             raw_link)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload = upload
            self.image_folder = image_folder
            self.remote = remote

        def as_dict(self):
            return super().as_dict() | prune_dict({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": self.control_after_generate})


@comfytype(io_type="IMAGE")
class Image(ComfyTypeIO):
    Type = torch.Tensor


@comfytype(io_type="MASK")
class Mask(ComfyTypeIO):
    Type = torch.Tensor


def create_input_dict_v1(inputs: list) -> dict:
    out = {"required": {}}
    for i in inputs:
        as_dict = i.as_dict()
        as_dict.pop("optional", None)  # V1 says optional by the category
        out.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), as_dict)
    return out


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):
        input_ids = [i.id for i in self.inputs]
        output_ids = [o.id for o in self.outputs]
        issues = []
        if len(set(input_ids)) != len(input_ids):
            issues.append(f"Input ids must be unique, but {[k for k, n in Counter(input_ids).items() if n > 1]} are not.")
        if len(set(output_ids)) != len(output_ids):
            issues.append(f"Output ids must be unique, but {[k for k, n in Counter(output_ids).items() if n > 1]} are not.")
        both = set(input_ids) & set(output_ids)
        if both:
            issues.append(f"Ids must be unique between inputs and outputs, but {both} are not.")
        if issues:
            raise ValueError("\n".join(issues))
        for item in self.inputs + self.outputs:
            item.validate()

    def finalize(self):
        for i, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"


class ComfyNode(_ComfyNodeInternal):
    """Base class of V3 nodes: subclasses define define_schema and execute (classmethods)."""

    RELATIVE_PYTHON_MODULE = None
    SCHEMA = None

    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> Any:
        """Optional: equivalent to V1's IS_CHANGED."""
        raise NotImplementedError

    @classmethod
    def GET_BASE_CLASS(cls):
        return ComfyNode

    def __init__(self):
        self.__class__.VALIDATE_CLASS()

    @classmethod
    def VALIDATE_CLASS(cls):
        if "define_schema" not in _own_attrs(cls):
            raise Exception(f"No define_schema function was defined for node class {cls.__name__}.")
        if "execute" not in _own_attrs(cls):
            raise Exception(f"No execute function was defined for node class {cls.__name__}.")

    @classproperty
    def FUNCTION(cls):  # noqa: N802
        return "EXECUTE_NORMALIZED"

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args, **kwargs) -> NodeOutput:
        out = cls.execute(*args, **kwargs)
        if out is None:
            return NodeOutput()
        if isinstance(out, NodeOutput):
            return out
        if isinstance(out, tuple):
            return NodeOutput(*out)
        raise Exception(f"Invalid return type from node: {type(out)}")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        cls.VALIDATE_CLASS()
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return create_input_dict_v1(cls.FINALIZE_SCHEMA().inputs)

    @classproperty
    def DESCRIPTION(cls):  # noqa: N802
        return cls.GET_SCHEMA().description

    @classproperty
    def CATEGORY(cls):  # noqa: N802
        return cls.GET_SCHEMA().category

    @classproperty
    def OUTPUT_NODE(cls):  # noqa: N802
        return cls.GET_SCHEMA().is_output_node

    @classproperty
    def INPUT_IS_LIST(cls):  # noqa: N802
        return cls.GET_SCHEMA().is_input_list

    @classproperty
    def RETURN_TYPES(cls):  # noqa: N802
        return [o.io_type for o in cls.GET_SCHEMA().outputs]

    @classproperty
    def RETURN_NAMES(cls):  # noqa: N802
        return [o.display_name if o.display_name else o.io_type for o in cls.GET_SCHEMA().outputs]

    @classproperty
    def OUTPUT_IS_LIST(cls):  # noqa: N802
        return [o.is_output_list for o in cls.GET_SCHEMA().outputs]

    @classproperty
    def OUTPUT_TOOLTIPS(cls):  # noqa: N802
        return [o.tooltip if o.tooltip else None for o in cls.GET_SCHEMA().outputs]


def _own_attrs(cls: type) -> set:
    names = set()
    for c in cls.mro():
        if c is ComfyNode:
            break
        names |= set(c.__dict__)
    return names


class NodeOutput(_NodeOutputInternal):
    """A node's result: positional outputs, optionally ui."""

    def __init__(self, *args: Any, ui=None, expand: dict = None, block_execution: str = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index) -> Any:
        return self.args[index]

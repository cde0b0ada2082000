"""comfy_api/internal: the base markers ComfyUI's executor tests V3 nodes and outputs against."""


class _ComfyNodeInternal:
    """Marker base of every V3 node class (execution.py: issubclass(cls, _ComfyNodeInternal))."""


class _NodeOutputInternal:
    """Marker base of io.NodeOutput (execution.py unwraps results that are instances of it)."""


class classproperty:
    """A read-only property on the class (comfy_api.internal.classproperty)."""

    def __init__(self, fget):
        self.fget = fget

    def __get__(self, obj, owner):
        return self.fget(owner)


def first_real_override(cls: type, name: str, base: type = None):
    """The class's own `name` when it overrides the one of its V3 base class, else None."""
    if base is None:
        if not hasattr(cls, "GET_BASE_CLASS"):
            raise ValueError("base is required if cls does not have a GET_BASE_CLASS; is this a valid ComfyNode subclass?")
        base = cls.GET_BASE_CLASS()
    base_attr = getattr(base, name, None)
    if base_attr is None:
        return None
    base_func = base_attr.__func__
    for c in cls.mro():
        if c is base:
            break
        if name in c.__dict__:
            func = getattr(c, name).__func__
            if func is not base_func:
                return getattr(cls, name)
    return None


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}

"""What a restorer is conditioned on: the one decision every caller asks.

A restorer declares what it was trained with (`Capabilities.of(config)`): reference attention
(InstantRestore, and the project's hybrid), a visual prompt (OSDFace, hybrid: it has a VRE), and
always the constant caption prompt. `decide` turns that, the requested mode and whether
reference faces are at hand into a `Conditioning` with the reason in words. The restorer's
forward, the pipeline, the CLI report and the node reports all call it, so what runs and what
the user is told cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import MODES

REFERENCE_METHODS = ("instantrestore", "hybrid")  # trained with reference attention
REFERENCE_MODES = ("references", "both")  # modes that force the references


@dataclass(frozen=True)
class Capabilities:
    """What a restorer was trained to use besides its constant prompt."""

    method: str
    references: bool
    visual_prompt: bool
    reference_identity: bool = False  # the references' face-ID tokens join the prompt (config.ref_id)

    @classmethod
    def of(cls, config) -> "Capabilities":
        """From a RestorerConfig: reference attention by method, a visual prompt when it has a VRE,
        the reference-identity channel when it declares one."""
        return cls(config.method, config.method in REFERENCE_METHODS, config.vre is not None,
                   config.ref_id is not None)


@dataclass(frozen=True)
class Conditioning:
    """The decision: references injected? visual prompt (else the constant caption)? and why."""

    use_references: bool
    use_visual_prompt: bool
    reason: str
    use_reference_identity: bool = False  # follows use_references on restorers with the channel

    def describe(self) -> str:
        """"references + visual prompt", "visual prompt", ..., "fixed caption only"."""
        parts = (["references"] if self.use_references else []) + \
                (["reference identity"] if self.use_reference_identity else []) + \
                (["visual prompt"] if self.use_visual_prompt else [])
        return " + ".join(parts) or "fixed caption only"


def check_references_given(mode: str, have_references: bool) -> None:
    """ValueError when `mode` forces references and none are given (checkable before a model
    is loaded; decide() checks it too)."""
    if mode in REFERENCE_MODES and not have_references:
        raise ValueError(f"mode {mode!r} needs reference faces: give reference photos (a folder, an "
                         "image or a bank .safetensors), or use mode 'auto' / 'visual_prompt'")


def decide(caps: Capabilities, mode: str, have_references: bool) -> Conditioning:
    """The conditioning for a requested mode; ValueError (what to do instead) when it cannot work.

    auto: the references when the restorer was trained with them and some are given, and the
    visual prompt when it has one. A restorer trained without references never gets them in
    auto (its attention would read features it never learnt); asking for them is an error.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    name = f"this {caps.method} restorer"
    if mode == "auto":
        use_refs = caps.references and have_references
        if use_refs:
            why = "reference faces given"
        elif have_references:
            why = f"{name} was trained without references, so the reference faces are not used"
        elif caps.references:
            why = "no reference faces given"
        else:
            why = f"{name} does not use references"
        prompt = "its visual prompt" if caps.visual_prompt else "the fixed caption (no visual prompt)"
        return Conditioning(use_refs, caps.visual_prompt, f"auto: {why}; {prompt}",
                            use_refs and caps.reference_identity)
    wants_refs, wants_vp = mode in REFERENCE_MODES, mode in ("visual_prompt", "both")
    if wants_refs and not caps.references:
        raise ValueError(f"mode {mode!r}: {name} was trained without reference faces and cannot use "
                         "them; use mode 'auto'" + (" or 'visual_prompt'" if caps.visual_prompt else ""))
    check_references_given(mode, have_references)
    if wants_vp and not caps.visual_prompt:
        raise ValueError(f"mode {mode!r}: {name} has no visual-prompt embedder; use mode 'references' or 'auto'")
    return Conditioning(wants_refs, wants_vp, f"{mode}: as asked", wants_refs and caps.reference_identity)

"""The choices users pick from, defined once: the CLI's `choices=` and the nodes' combo boxes
import these, and the modules that act on them validate against the same tuples."""

MODES = ("auto", "references", "visual_prompt", "both", "none")  # conditioning (see restore/conditioning.py)
DETECTORS = ("yunet", "scrfd", "facexlib")
COLOR_FIXES = ("wavelet", "meanstd", "none")
MASK_SHAPES = ("landmarks", "ellipse", "box")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SPEEDS = ("auto", "compile", "graph", "eager")  # pipeline.speed_config: auto = compile on CUDA, graph elsewhere

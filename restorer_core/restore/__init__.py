"""Restoring located faces and putting them back: the second stage.

pipeline.py (FaceRestorePipeline: locate -> restore in batches -> paste) decides the
conditioning (conditioning.py) from the model and the reference bank (bank.py), whose keys and
values reference_cache.py keeps on disk; detail.py sets each face's strength (sharp faces are
kept), paste.py blends the restored crop back with colour correction (color.py).
Submodules are imported by callers.
"""

"""Files in and out: images (imageio.py), outputs that never replace a file (outputs.py),
atomic writes (atomic.py), the run report (report.py) and content hashes (digest.py).
Submodules are imported by callers; with absolute imports this package never hides the
standard library's `io`.
"""

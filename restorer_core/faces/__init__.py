"""Finding and following faces: the first stage a photo goes through.

detect/ (face detectors: YuNet, SCRFD, facexlib; a second pass for faces missed) -> locate.py
(detect, order left to right, select, align; video tracks via tracks.py) -> align.py (the
FFHQ 5-point template, crops and their inverse). select.py chooses faces (largest, index,
similar), identity.py scores faces against a person, temporal.py smooths landmarks and
strength over video frames, orientation.py tries sideways and upside-down images.
records.py holds the face records every stage passes on. Submodules are imported by callers.
"""

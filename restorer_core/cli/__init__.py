"""Command line: restore photos, build and inspect reference banks, convert official weights.

    python -m restorer_core restore INPUT... --out DIR [--refs FOLDER|BANK.safetensors] ...
    python -m restorer_core bank build PHOTOS...|FOLDER --out BANK.safetensors
    python -m restorer_core bank info BANK.safetensors
    python -m restorer_core convert ...

One module per command (restore.py, bank.py, convert.py), the parser and entry point in app.py.
`restore` runs in five named steps: validate (plan.py: arguments and every path it will write,
before anything is loaded), open_resources (resources.py: detector, bank, restorer -> pipeline),
shard (restore.py, distributed.py: torchrun), run_restore (run.py: per image: resume check,
load, restore, write), summarize (summary.py: report and exit code).

Exit codes: 0 success; 1 some image failed; 2 bad usage or a setup error found before any
file was written (missing model, unwritable output folder, empty reference folder...); 130 cancelled.
Outputs never replace an existing file: `photo.jpg` becomes `photo_restored.jpg`, or
`photo_restored_1.jpg`, `_2`... when that name is taken; a re-run skips inputs already restored
with the same settings (restorer_core.io.outputs). Every file is written atomically.
"""

from .app import main

__all__ = ["main"]

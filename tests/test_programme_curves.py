"""scripts/programme_curves.py: windows stay inside a session, validation rows keep session order."""

import importlib.util
import json
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "programme_curves.py"


def _load():
    spec = importlib.util.spec_from_file_location("programme_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(path: Path, steps, l1, val_steps):
    lines = [json.dumps({"step": s, "lr": 1e-4, "l1": l1, "ssim": .3, "identity": .2, "adversarial": .4,
                         "feature_matching": .02, "disc": 1.6}) for s in steps]
    lines += [json.dumps({"step": s, "val": {"x8_refs4_id": .7 + s / 1e5, "x8_norefs_id": .6}}) for s in val_steps]
    path.write_text("\n".join(lines) + "\n")


def test_curves_keep_sessions_apart(tmp_path):
    curves = _load()
    _log(tmp_path / "session1_train_log.jsonl", range(50, 2700, 50), 0.06, [1000, 2000])
    _log(tmp_path / "session10_train_log.jsonl", range(2700, 3100, 50), 0.04, [3000])
    (tmp_path / "notes_train_log.jsonl").write_text("not a session\n")
    (tmp_path / "session4_ablation" / "nogan").mkdir(parents=True)
    _log(tmp_path / "session4_ablation" / "nogan" / "train_log.jsonl", range(6050, 6700, 50), 0.05, [6500])
    assert curves.main(["--logs", str(tmp_path), "--every", "500"]) == 0
    sessions = curves.read_sessions(tmp_path)
    assert [n for n, _ in sessions] == [1, 10]  # numeric order, other files ignored
    rows = curves.windows(sessions, 500)
    # the window of steps 2500-2999 is split at the session boundary, each with its own mean
    split = [r for r in rows if r["step"] == 3000]
    assert [(r["session"], round(r["l1"], 3)) for r in split] == [(1, 0.06), (10, 0.04)]
    assert [r["step"] for r in curves.validations(sessions)] == [1000, 2000, 3000]
    md = (tmp_path / "curves.md").read_text()
    assert "| 10 | 3000 | 0.7300 | 0.6000 |" in md
    assert "| 4 | nogan | 6500 | 0.7650 | 0.6000 |" in md  # ablation runs: their own table ...
    assert [r["step"] for r in curves.validations(sessions)][-1] == 3000  # ... not the main line's
    assert Image.open(tmp_path / "curves.png").size == (900, 640)


def test_curves_say_when_there_is_nothing(tmp_path, capsys):
    assert _load().main(["--logs", str(tmp_path)]) == 2
    assert "no session" in capsys.readouterr().err

"""Downloads of the official weights (loaders/download.resolve_weights -> huggingface_hub's
hf_hub_download) end to end, against a local Hub on 127.0.0.1 (tests/hub_server.py) serving the
official repositories' file layouts with tiny random weights.

Each download runs in a fresh Python process with HF_ENDPOINT pointing at the local Hub, as a
user's would with a mirror (huggingface_hub reads HF_ENDPOINT when it is imported), so it can be
killed mid-file like a closed ComfyUI.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub_server import FakeHub
from official_fixtures import build_instantrestore, tiny_config

REPO = Path(__file__).resolve().parents[1]
RUN = ("import sys; from pathlib import Path\n"
       "from restorer_core.errors import ModelNotFoundError\n"
       "from restorer_core.loaders.download import resolve_weights\n"
       "try:\n"
       "    print(resolve_weights(sys.argv[1], Path(sys.argv[2]), allow_download=True))\n"
       "except ModelNotFoundError as exc:\n"
       "    print(exc, file=sys.stderr); sys.exit(3)\n")


def downloader(hub: FakeHub, name: str, folder: Path, home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="20", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", RUN, name, str(folder)], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.strip(), err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official repositories' layouts: InstantRestore's one checkpoint (a real tiny one in
    its format), SD 2.1-base's diffusers unet/ and vae/ (configs and random weight bytes)."""
    folder = tmp_path_factory.mktemp("official")
    ir = build_instantrestore(folder / "final_model_ckpt.pt", ref_lora_rank=4)
    rng = os.urandom
    sd = {"unet/config.json": b'{"_class_name": "UNet2DConditionModel"}',
          "unet/diffusion_pytorch_model.safetensors": rng(700_000),
          "vae/config.json": b'{"_class_name": "AutoencoderKL"}',
          "vae/diffusion_pytorch_model.safetensors": rng(300_000),
          "model_index.json": b"{}"}
    return {"hwdz15508/InstantRestore": {"final_model_ckpt.pt": ir.path.read_bytes(),
                                         "README.md": b"# InstantRestore"},
            "stabilityai/stable-diffusion-2-1-base": sd}, ir


def test_download_writes_the_official_files_that_then_load(official, tmp_path):
    from restorer_core.loaders.instantrestore import load_instantrestore

    repos, ir = official
    models = tmp_path / "models"
    with FakeHub(repos) as hub:
        code, out, err = finish(downloader(hub, "instantrestore", models, tmp_path / "hf"))
        assert code == 0, err
        got = models / "instantrestore" / "final_model_ckpt.pt"
        assert out == str(got) and sha(got) == sha(ir.path)
        bar = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("instantrestore: final_model_ckpt.pt")]
        assert bar and "100%" in bar[-1] and "21.2M/21.2M" in bar[-1]  # the progress bar, named by file
        methods = [(r.method, r.path.split("/")[1]) for r in hub.state.log]
        assert ("HEAD", "hwdz15508") in methods and ("GET", "cdn") in methods  # resolve, then the LFS redirect
        code, out2, _ = finish(downloader(hub, "sd21-base", models, tmp_path / "hf"))
        assert code == 0 and out2 == str(models / "sd21-base")
        for name in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                     "vae/diffusion_pytorch_model.safetensors"):
            assert (models / "sd21-base" / name).read_bytes() == repos["stabilityai/stable-diffusion-2-1-base"][name]
        assert not (models / "sd21-base" / "model_index.json").exists()  # only the files the loader needs
        before = len(hub.state.log)
        code, _, _ = finish(downloader(hub, "instantrestore", models, tmp_path / "hf"))
        assert code == 0 and len(hub.state.log) == before  # on disk: not asked again
    restorer = load_instantrestore(got, config=tiny_config())
    assert restorer.source.load_report.loaded  # the downloaded file is a loadable official checkpoint


def test_killed_download_leaves_no_file_and_the_next_run_completes(official, tmp_path):
    """Killed mid-file: nothing where the loader looks; the next run removes the partial file
    (huggingface_hub >= 1 never reuses it) and downloads the file whole."""
    repos, ir = official
    data = repos["hwdz15508/InstantRestore"]["final_model_ckpt.pt"]
    half = len(data) // 2
    models, target = tmp_path / "models", tmp_path / "models" / "instantrestore" / "final_model_ckpt.pt"
    partials = models / "instantrestore" / ".cache" / "huggingface" / "download"
    with FakeHub(repos) as hub:
        hub.state.stall_after = half
        proc = downloader(hub, "instantrestore", models, tmp_path / "hf")
        assert hub.state.reached.wait(60), "the download never started"
        time.sleep(0.5)  # let the client write what it received
        proc.send_signal(signal.SIGKILL)  # like closing ComfyUI mid-download
        proc.communicate(timeout=30)
        assert not target.exists()  # nothing half-written where the loader looks
        left = list(partials.glob("*.incomplete"))
        assert len(left) == 1 and 0 < left[0].stat().st_size <= half
        hub.state.stall_after = None
        hub.state.release.set()
        code, out, err = finish(downloader(hub, "instantrestore", models, tmp_path / "hf"))
        assert code == 0, err
        assert sha(target) == sha(ir.path)
        assert not list(partials.glob("*.incomplete"))  # the killed run's partial file is gone


def test_dropped_connection_is_resumed_within_the_call(official, tmp_path):
    repos, ir = official
    models = tmp_path / "models"
    with FakeHub(repos) as hub:
        hub.state.drop_after, hub.state.drops = 12_000_000, 1  # past huggingface_hub's first 10 MB chunk
        code, out, err = finish(downloader(hub, "instantrestore", models, tmp_path / "hf"))
        assert code == 0, err
        assert sha(Path(out)) == sha(ir.path)
        ranges = [r.range for r in hub.state.log if r.method == "GET" and r.path.startswith("/cdn/")]
        assert len(ranges) == 2 and ranges[0] is None  # one retry, from where the data stopped
        assert ranges[1].startswith("bytes=") and 0 < int(ranges[1][6:-1]) <= 12_000_000


def test_a_file_missing_from_the_hub_is_a_clear_error(official, tmp_path):
    repos, _ = official
    broken = {**repos, "stabilityai/stable-diffusion-2-1-base": {
        k: v for k, v in repos["stabilityai/stable-diffusion-2-1-base"].items() if k != "vae/config.json"}}
    models = tmp_path / "models"
    with FakeHub(broken) as hub:
        code, _, err = finish(downloader(hub, "sd21-base", models, tmp_path / "hf"))
        assert code == 3
        assert "stabilityai/stable-diffusion-2-1-base has no file vae/config.json" in err
        assert f"Put these files in {models / 'sd21-base'}" in err and "Traceback" not in err
        assert not (models / "sd21-base" / "vae" / "config.json").exists()
        code, _, err = finish(downloader(hub, "osdface", models, tmp_path / "hf"))  # repo not on this Hub
        assert code == 3 and "jkwang28/OSDFace is not reachable" in err
        assert not [p for p in (models / "osdface").rglob("*") if p.is_file() and ".cache" not in p.parts]

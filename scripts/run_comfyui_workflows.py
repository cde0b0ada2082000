#!/usr/bin/env python3
"""Run the pack's API-format workflows against a running local ComfyUI and report each outcome.

What it does, per workflow file in ``example_workflows/api/`` (or the ones named on the command line):
1. checks that every ``class_type`` in the graph is known to the server (``GET /object_info``);
2. uploads the images its ``LoadImage`` nodes name from ``example_workflows/inputs/`` through
   ``POST /upload/image`` (ComfyUI never overwrites: an existing file with the same name and the
   same bytes is reused, a different one makes ComfyUI pick a new name, which is then put into
   the graph);
3. posts the graph to ``POST /prompt`` and polls ``GET /history/<prompt_id>`` until it finishes;
4. prints ``ok`` with the saved/previewed image files and any text previews, or the error that
   ComfyUI recorded (node, exception and message).

The exit status is 0 only when every workflow succeeded. Only loopback URLs are accepted: this is a
local test harness, not a remote client. Standard library only, so any Python 3.10+ runs it.

Example (small txt2img for a CPU run with a stand-in checkpoint)::

    python scripts/run_comfyui_workflows.py 04 \
        --set CheckpointLoaderSimple.ckpt_name=random_sd15.safetensors \
        --set EmptyLatentImage.width=256 --set EmptyLatentImage.height=256 --set KSampler.steps=2
"""
from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOWS = REPO / "example_workflows" / "api"
DEFAULT_INPUTS = REPO / "example_workflows" / "inputs"


@dataclass(frozen=True)
class Override:
    """One ``--set Class.input=value``: applied to every node of that class in every workflow."""

    class_type: str
    input_name: str
    value: object


@dataclass
class Outcome:
    """What happened to one workflow."""

    name: str
    ok: bool
    seconds: float = 0.0
    prompt_id: str = ""
    images: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    cached_nodes: int = 0
    error: str = ""


class Client:
    """Minimal JSON-over-HTTP client for one ComfyUI server."""

    def __init__(self, base_url: str, request_timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        self.request_timeout = request_timeout

    def get_json(self, path: str) -> object:
        with urllib.request.urlopen(self.base + path, timeout=self.request_timeout) as r:
            return json.load(r)

    def post_json(self, path: str, body: dict) -> tuple[int, object]:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        return self._send(req)

    def upload_image(self, file: Path) -> dict:
        """POST one file to /upload/image as multipart form data (no overwrite)."""
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninput\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                f"filename=\"{file.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
        body = head.encode() + file.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.base + "/upload/image", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        status, reply = self._send(req)
        if status != 200 or not isinstance(reply, dict) or "name" not in reply:
            raise RuntimeError(f"uploading {file.name} failed: HTTP {status} {reply}")
        return reply

    def _send(self, req: urllib.request.Request) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(req, timeout=self.request_timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw.strip() else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")


def require_loopback(url: str) -> None:
    """Refuse anything but http(s) on localhost / 127.0.0.0/8 / ::1."""
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https"):
        raise SystemExit(f"--comfyui-url must start with http:// (got {url!r})")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"--comfyui-url must point at this machine (127.0.0.1, ::1 or localhost); got host {host!r}")


def parse_override(text: str) -> Override:
    """``Class.input=value``; the value is read as JSON when it parses (numbers, true), else as a string."""
    target, sep, raw = text.partition("=")
    class_type, dot, input_name = target.partition(".")
    if not sep or not dot or not class_type or not input_name:
        raise argparse.ArgumentTypeError(f"--set wants Class.input=value, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return Override(class_type, input_name, value)


def apply_overrides(graph: dict, overrides: list[Override]) -> dict:
    """Return a copy of ``graph`` with the overrides applied to matching nodes' widget inputs."""
    graph = copy.deepcopy(graph)
    for node in graph.values():
        for o in overrides:
            if node.get("class_type") == o.class_type:
                node.setdefault("inputs", {})[o.input_name] = o.value
    return graph


def select_workflows(folder: Path, names: list[str]) -> list[Path]:
    """All ``*.json`` in ``folder``, or those whose file name starts with one of ``names``."""
    files = sorted(folder.glob("*.json"))
    if not names:
        return files
    chosen = [f for f in files if any(f.name.startswith(n) or f.stem == n for n in names)]
    missing = [n for n in names if not any(f.name.startswith(n) or f.stem == n for f in files)]
    if missing:
        raise SystemExit(f"no workflow in {folder} matches {missing}; available: {[f.stem for f in files]}")
    return chosen


def unknown_classes(graph: dict, object_info: dict) -> list[str]:
    return sorted({n["class_type"] for n in graph.values() if n["class_type"] not in object_info})


def upload_inputs(client: Client, graph: dict, inputs_dir: Path, uploaded: dict[str, str]) -> dict:
    """Upload the files LoadImage nodes name (once per run) and point the nodes at the server's names."""
    graph = copy.deepcopy(graph)
    for node in graph.values():
        if node["class_type"] != "LoadImage":
            continue
        name = node["inputs"].get("image")
        if not isinstance(name, str):
            continue
        if name not in uploaded:
            local = inputs_dir / name
            if not local.is_file():
                continue  # not ours to upload: the server may already have it; validation will say if not
            reply = client.upload_image(local)
            sub = reply.get("subfolder") or ""
            uploaded[name] = f"{sub}/{reply['name']}" if sub else reply["name"]
        node["inputs"]["image"] = uploaded[name]
    return graph


def format_error(status: dict) -> str:
    """The error (or interruption) ComfyUI recorded in /history, in one paragraph."""
    parts = []
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            parts.append(f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                         f"{data.get('exception_type')}: {str(data.get('exception_message', '')).strip()}")
        elif kind == "execution_interrupted":
            parts.append(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})")
    return "; ".join(parts) or f"status {status.get('status_str')!r} with no error message"


def format_rejection(reply: object) -> str:
    """The validation error /prompt returns with HTTP 400 (bad inputs, missing files, unknown names)."""
    if not isinstance(reply, dict):
        return str(reply)
    err = reply.get("error", {})
    lines = [f"{err.get('message', '')} {err.get('details', '')}".strip()]
    for node_id, info in (reply.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            lines.append(f"node {node_id} ({info.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "; ".join(line for line in lines if line)


def collect_outputs(entry: dict) -> tuple[list[str], list[str]]:
    """Image files (``type/subfolder/name``) and text previews from a /history entry's outputs."""
    images, texts = [], []
    for node_id, out in sorted(entry.get("outputs", {}).items(), key=lambda kv: kv[0]):
        for img in out.get("images", []):
            parts = [img.get("type", "output"), img.get("subfolder", ""), img["filename"]]
            images.append("/".join(p for p in parts if p))
        for t in out.get("text", []):
            texts.append(f"node {node_id}: {' '.join(str(t).split())}")
    return images, texts


def wait_for(client: Client, prompt_id: str, timeout: float, poll: float) -> dict | None:
    """Poll /history/<id> until the prompt is recorded there as finished; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = client.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(poll)
    return None


def cancel(client: Client, prompt_id: str) -> None:
    """Drop the prompt from the queue, or interrupt it if it is the one running."""
    client.post_json("/queue", {"delete": [prompt_id]})
    client.post_json("/interrupt", {"prompt_id": prompt_id})


def run_one(client: Client, path: Path, object_info: dict, args: argparse.Namespace,
            uploaded: dict[str, str]) -> Outcome:
    name = path.stem
    graph = apply_overrides(json.loads(path.read_text()), args.set)
    missing = unknown_classes(graph, object_info)
    if missing:
        return Outcome(name, False, error=f"server has no node class {missing}: is the node pack installed "
                                          "and did it import without errors (see the ComfyUI console)?")
    graph = upload_inputs(client, graph, args.inputs_dir, uploaded)
    start = time.monotonic()
    status, reply = client.post_json("/prompt", {"prompt": graph, "client_id": args.client_id})
    if status != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
        return Outcome(name, False, error=f"/prompt rejected the graph (HTTP {status}): {format_rejection(reply)}")
    prompt_id = reply["prompt_id"]
    # ComfyUI queues a graph when at least one output node is valid and silently skips the invalid
    # ones; their errors come back only here, so a non-empty node_errors is a failure of its own.
    skipped = format_rejection({"node_errors": reply.get("node_errors")}) if reply.get("node_errors") else ""
    entry = wait_for(client, prompt_id, args.timeout, args.poll)
    seconds = time.monotonic() - start
    if entry is None:
        cancel(client, prompt_id)
        return Outcome(name, False, seconds, prompt_id,
                       error=f"not finished after {args.timeout:.0f} s; removed from the queue / interrupted")
    images, texts = collect_outputs(entry)
    st = entry.get("status", {})
    cached = sum(len(d.get("nodes", [])) for k, d in st.get("messages", []) if k == "execution_cached")
    if st.get("status_str") != "success":
        return Outcome(name, False, seconds, prompt_id, images, texts, cached, format_error(st))
    if skipped:
        return Outcome(name, False, seconds, prompt_id, images, texts, cached,
                       f"ComfyUI skipped invalid output node(s): {skipped}")
    if not images:
        return Outcome(name, False, seconds, prompt_id, images, texts, cached,
                       "finished without any image output (no SaveImage/PreviewImage result in /history)")
    return Outcome(name, True, seconds, prompt_id, images, texts, cached)


def report(o: Outcome) -> str:
    lines = [f"== {o.name}: {'ok' if o.ok else 'FAILED'}" + (f" in {o.seconds:.1f} s" if o.seconds else "")
             + (f" ({o.cached_nodes} node(s) served from cache)" if o.cached_nodes else "")]
    if o.error:
        lines.append(f"   error: {o.error}")
    lines += [f"   image: {i}" for i in o.images]
    lines += [f"   text:  {t[:300]}" for t in o.texts]
    return "\n".join(lines)


def write_new_json(path: Path, data: object) -> None:
    """Write ``data`` to ``path`` atomically (temp file + os.replace); refuse to replace an existing file."""
    if path.exists():
        raise SystemExit(f"{path} exists; pass a new file name to --json")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workflows", nargs="*", help="workflow names or prefixes (e.g. 02 03); default: all")
    p.add_argument("--comfyui-url", default="http://127.0.0.1:8188", help="loopback URL of a running ComfyUI")
    p.add_argument("--workflows-dir", type=Path, default=DEFAULT_WORKFLOWS, help="folder of API-format JSON")
    p.add_argument("--inputs-dir", type=Path, default=DEFAULT_INPUTS, help="images to upload for LoadImage")
    p.add_argument("--set", action="append", type=parse_override, default=[], metavar="Class.input=value",
                   help="override a widget input on every node of a class (repeatable)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for each workflow")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between /history polls")
    p.add_argument("--client-id", default="onestep-e2e", help="client_id sent with each prompt")
    p.add_argument("--json", type=Path, help="also write the outcomes as JSON to this (new) file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_loopback(args.comfyui_url)
    if args.json and args.json.exists():
        raise SystemExit(f"{args.json} exists; pass a new file name to --json")
    client = Client(args.comfyui_url)
    try:
        object_info = client.get_json("/object_info")
    except (urllib.error.URLError, OSError) as e:
        print(f"cannot reach ComfyUI at {args.comfyui_url} ({e}); start it first "
              "(python main.py --cpu --listen 127.0.0.1)", file=sys.stderr)
        return 2
    uploaded: dict[str, str] = {}
    outcomes = []
    for path in select_workflows(args.workflows_dir, args.workflows):
        try:
            outcome = run_one(client, path, object_info, args, uploaded)
        except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:
            outcome = Outcome(path.stem, False, error=f"{type(e).__name__}: {e}")
        outcomes.append(outcome)
        print(report(outcome), flush=True)
    failed = [o.name for o in outcomes if not o.ok]
    print(f"\n{len(outcomes) - len(failed)}/{len(outcomes)} workflow(s) ok" + (f"; failed: {failed}" if failed else ""))
    if args.json:
        write_new_json(args.json, [o.__dict__ for o in outcomes])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

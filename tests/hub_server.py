"""A small Hugging Face Hub stand-in on 127.0.0.1 for download tests (point HF_ENDPOINT at it).

It answers what huggingface_hub's hf_hub_download asks (file_download.get_hf_file_metadata and
http_get), as huggingface.co does:
* HEAD/GET /{repo_id}/resolve/{revision}/{filename}: a regular (git) file answers 200 with its
  body, ETag (a git blob id), X-Repo-Commit and Content-Length; an LFS file (weights) answers
  302 to a CDN URL with X-Linked-Etag (its sha256), X-Linked-Size and X-Repo-Commit.
* GET /cdn/{sha256} on a second port (another origin, as the Hub's CDN is another host, so
  huggingface_hub takes the metadata from the redirect and does not follow it on HEAD): the LFS
  file's bytes, honouring Range (206 with Content-Range).
* a file the repository does not have: 404 with X-Error-Code: EntryNotFound; an unknown
  repository: 401 with X-Error-Code: RepoNotFound.
Knobs for failure tests: `stall_after` (bytes of a body after which the server waits until
`release` is set, so a test can kill the downloader mid-file) and `drop_after` (close the
connection after that many bytes, for the next `drops` bodies). `log` records every request.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

LFS_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx")


@dataclass
class Request:
    method: str
    path: str
    range: Optional[str]


@dataclass
class HubState:
    repos: dict  # repo_id -> {filename: bytes}
    log: list = field(default_factory=list)
    stall_after: Optional[int] = None
    release: threading.Event = field(default_factory=threading.Event)
    sent: int = 0  # body bytes sent by the body being stalled or dropped
    reached: threading.Event = field(default_factory=threading.Event)  # set when a body hit stall_after
    drop_after: Optional[int] = None
    drops: int = 0

    def commit(self, repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()  # 40 hex digits, as a git commit id

    def blob(self, sha256: str) -> Optional[bytes]:
        for files in self.repos.values():
            for data in files.values():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return data
        return None


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass per server
    cdn: str = ""  # base URL of the CDN server

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        st = self.state
        st.log.append(Request(self.command, self.path, self.headers.get("Range")))
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 2:
            data = st.blob(parts[1])
            if data is None:
                return self._error(404, "EntryNotFound", "no such object")
            return self._body(data, head, {"ETag": f'"{parts[1]}"'})
        if "resolve" not in parts:
            return self._error(404, "EntryNotFound", "not a resolve URL")
        at = parts.index("resolve")
        repo_id, filename = "/".join(parts[:at]), "/".join(parts[at + 2:])
        if repo_id not in st.repos:
            return self._error(401, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
        files = st.repos[repo_id]
        if filename not in files:
            return self._error(404, "EntryNotFound", f"Entry Not Found for url: {self.path}.")
        data = files[filename]
        common = {"X-Repo-Commit": st.commit(repo_id)}
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            self.send_response(302)
            for k, v in {**common, "Location": f"{self.cdn}/cdn/{sha}", "X-Linked-Etag": f'"{sha}"',
                         "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_id(data)}"',
                         "Content-Length": "0"}.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self._body(data, head, {**common, "ETag": f'"{git_blob_id(data)}"'})

    def _error(self, code: int, error_code: str, message: str) -> None:
        body = ('{"error": "%s"}' % message).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error_code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self, data: bytes, head: bool, headers: dict) -> None:
        st = self.state
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0])
        if start >= len(data) and data:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        part = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(part)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        stall, drop = st.stall_after, st.drop_after if st.drops > 0 else None
        if drop is not None:
            st.drops -= 1
        step = 64 * 1024
        for i in range(0, len(part), step):
            chunk = part[i:i + step]
            if drop is not None and i + len(chunk) > drop:
                self.wfile.write(chunk[:max(0, drop - i)])
                self.wfile.flush()
                self.close_connection = True
                return
            if stall is not None and i + len(chunk) > stall:
                self.wfile.write(chunk[:max(0, stall - i)])
                self.wfile.flush()
                st.sent = start + stall
                st.reached.set()
                st.release.wait(60)
                self.close_connection = True
                return
            self.wfile.write(chunk)
        self.wfile.flush()


class FakeHub:
    """The Hub and its CDN on two free 127.0.0.1 ports, in threads; `endpoint` is the Hub's URL."""

    def __init__(self, repos: dict):
        self.state = HubState(repos=repos)
        self.servers = []
        for _ in range(2):
            handler = type("Handler", (HubHandler,), {"state": self.state})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            self.servers.append((server, handler))
        hub, cdn = self.servers
        self.endpoint = f"http://127.0.0.1:{hub[0].server_address[1]}"
        hub[1].cdn = f"http://127.0.0.1:{cdn[0].server_address[1]}"
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s, _ in self.servers]

    def __enter__(self) -> "FakeHub":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.state.release.set()
        for server, _ in self.servers:
            server.shutdown()
            server.server_close()

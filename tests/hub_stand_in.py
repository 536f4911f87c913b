"""A loopback stand-in for the part of the Hugging Face Hub's REST API that a push uses.

The Hub cannot be reached here and has no local edition, so this answers the six calls that
`huggingface_hub` makes for a token check and an `upload_folder` of small files: whoami-v2,
repos/create (a new repo holds a `.gitattributes`, as on the Hub), validate-yaml, the repo tree
(listed for `delete_patterns`), preupload (every file "regular", so no LFS or Xet transfer) and
commit (NDJSON: base64 contents, and deleted files). `huggingface_hub` itself builds and sends every request; the
stand-in checks the bearer token and keeps what each commit wrote, so a test can compare it
byte for byte with what was meant to be published. `fail_next` makes the next requests fail with
the given statuses (429, 503, ...), as a busy Hub would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# What the Hub writes into every new repo (abridged): LFS rules for weight files.
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


class HubStandIn:
    def __init__(self, token: str, role: str = "write", user: str = "qa-bot"):
        self.token, self.role, self.user = token, role, user
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}, "commits": [...]}
        self.requests: list[str] = []
        self.fail_next: list[int] = []  # statuses to answer the next requests with, one each
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if hub.fail_next:
                    self._reply(hub.fail_next.pop(0), {"error": "stand-in told to fail this request"})
                    return False
                if self.headers.get("Authorization") == f"Bearer {hub.token}":
                    return True
                self._reply(401, {"error": "Invalid credentials in Authorization header"})
                return False

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_GET(self):
                hub.requests.append(f"GET {self.path}")
                path = self.path.split("?")[0]
                if path.startswith("/api/models/") and "/tree/" in path:
                    repo = path[len("/api/models/"):].split("/tree/")[0]
                    if not self._authorized():
                        return
                    if repo not in hub.repos:
                        return self._reply(404, {"error": "Repository not found"})
                    # The whole tree in one page (recursive listing; no Link header, so no next page).
                    return self._reply(200, [{"type": "file", "path": name, "size": len(data),
                                              "oid": hashlib.sha1(data).hexdigest()}
                                             for name, data in sorted(hub.repos[repo]["files"].items())])
                if not path.startswith("/api/whoami-v2"):
                    return self._reply(404, {"error": f"not served by the stand-in: {self.path}"})
                if self._authorized():
                    self._reply(200, {"type": "user", "name": hub.user, "auth": {"accessToken": {"role": hub.role}}})

            def do_POST(self):
                hub.requests.append(f"POST {self.path}")
                body = self._body()
                if not self._authorized():
                    return
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req.get('organization') or hub.user}/{req['name']}"
                    if repo in hub.repos:
                        return self._reply(409, {"error": "You already created this model repo", "url": repo})
                    hub.repos[repo] = {"private": req.get("visibility") == "private", "commits": [],
                                       "files": {".gitattributes": GITATTRIBUTES}}
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    return self._reply(200, {})
                if path.startswith("/api/models/") and "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                       for f in files]})
                if path.startswith("/api/models/") and "/commit/" in path:
                    repo = path[len("/api/models/"):].split("/commit/")[0]
                    if repo not in hub.repos:
                        return self._reply(404, {"error": "Repository not found"})
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    header = next(x["value"] for x in lines if x["key"] == "header")
                    files = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                             for x in lines if x["key"] == "file"}
                    deleted = [x["value"]["path"] for x in lines if x["key"] == "deletedFile"]
                    if any(x["key"] not in ("header", "file", "deletedFile") for x in lines):
                        return self._reply(400, {"error": "the stand-in takes files and deleted files only"})
                    if missing := [p for p in deleted if p not in hub.repos[repo]["files"]]:
                        return self._reply(404, {"error": f"cannot delete {missing[0]}: no such file"})
                    for p in deleted:
                        del hub.repos[repo]["files"][p]
                    hub.repos[repo]["files"].update(files)
                    oid = f"{len(hub.repos[repo]['commits']) + 1:040x}"
                    hub.repos[repo]["commits"].append({"oid": oid, "summary": header["summary"], "files": sorted(files),
                                                       "deleted": sorted(deleted)})
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid,
                                             "pullRequestUrl": None})
                self._reply(404, {"error": f"not served by the stand-in: {path}"})

        return Handler

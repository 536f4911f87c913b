"""A loopback stand-in for the part of the Hugging Face Hub's REST API that a push uses.

The Hub cannot be reached here and has no local edition, so this answers the six calls that
`huggingface_hub` makes for a token check and an `upload_folder` of small files: whoami-v2,
repos/create (a new repo holds a `.gitattributes`, as on the Hub), validate-yaml, the repo tree
(listed for `delete_patterns`), preupload (every file "regular", so no LFS or Xet transfer) and
commit (NDJSON: base64 contents, and deleted files). `huggingface_hub` itself builds and sends every request; the
stand-in checks the bearer token and keeps what each commit wrote, so a test can compare it
byte for byte with what was meant to be published. `fail_next` makes the next requests fail with
the given statuses (429, 503, ...), as a busy Hub would.

It also answers the three reads a download makes (`model_info`, the tree at a revision, and the HEAD
and GET of each file under `/<repo>/resolve/<revision>/`), from the files as they were at that
commit: `put_model` commits a folder's files, as a push would, and public repos are read without a
token. `requests` lists every call, so a test can see what was downloaded.
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

    def put_model(self, repo: str, folder, private: bool = False) -> str:
        """Commit every file of `folder` as `repo`'s whole content (a new repo, or its next commit); the commit id."""
        return self._put(repo, folder, private)

    def put_dataset(self, repo: str, folder, private: bool = False) -> str:
        """`put_model` for a dataset repo (`/api/datasets/...`, `/datasets/<repo>/resolve/...`)."""
        return self._put(f"datasets/{repo}", folder, private)

    def _put(self, repo: str, folder, private: bool) -> str:
        from pathlib import Path

        files = {str(f.relative_to(folder)): f.read_bytes() for f in sorted(Path(folder).rglob("*")) if f.is_file()}
        entry = self.repos.setdefault(repo, {"private": private, "commits": [], "files": {}})
        entry["files"] = {".gitattributes": GITATTRIBUTES, **files}
        return self._commit(repo, "put_model", sorted(files), [])

    def _commit(self, repo: str, summary: str, files: list[str], deleted: list[str]) -> str:
        entry = self.repos[repo]
        oid = hashlib.sha1(f"{repo}:{len(entry['commits'])}".encode()).hexdigest()
        entry["commits"].append({"oid": oid, "summary": summary, "files": files, "deleted": deleted})
        entry.setdefault("snapshots", {})[oid] = dict(entry["files"])
        return oid

    def tag(self, repo: str, tag: str, commit: str) -> None:
        """Name `commit` of `repo` `tag`, as a release tag on the Hub does."""
        self.repos[repo].setdefault("tags", {})[tag] = commit

    def _snapshot(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        snapshots = self.repos[repo].get("snapshots") or {}
        revision = self.repos[repo].get("tags", {}).get(revision, revision)
        if revision == "main" and self.repos[repo]["commits"]:
            revision = self.repos[repo]["commits"][-1]["oid"]
        return (revision, snapshots[revision]) if revision in snapshots else None

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
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

            def _readable(self, repo: str) -> bool:
                if repo not in hub.repos:
                    self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return False
                if hub.repos[repo]["private"] or hub.fail_next:
                    return self._authorized()
                return True

            def _file(self, send_body: bool) -> bool:
                """`/<repo>/resolve/<revision>/<file>`: the file's bytes, with the headers a download reads."""
                head, sep, rest = self.path.split("?")[0].lstrip("/").partition("/resolve/")
                if not sep:
                    return False
                revision, _, name = rest.partition("/")
                if not self._readable(head):
                    return True
                found = hub._snapshot(head, revision)
                if found is None or name not in found[1]:
                    self._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                    return True
                data = found[1][name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", found[0])
                self.end_headers()
                if send_body:
                    self.wfile.write(data)
                return True

            def do_HEAD(self):
                hub.requests.append(f"HEAD {self.path}")
                if not self._file(send_body=False):
                    self.send_response(200 if self.path in ("", "/") else 404)
                    self.end_headers()

            def do_GET(self):
                hub.requests.append(f"GET {self.path}")
                path = self.path.split("?")[0]
                api = next((a for a in ("/api/models/", "/api/datasets/") if path.startswith(a)), None)
                kind = "datasets/" if api == "/api/datasets/" else ""
                if api and "/tree/" in path:
                    repo, _, rest = path[len(api):].partition("/tree/")
                    revision, _, under = rest.partition("/")
                    if not self._readable(kind + repo):
                        return
                    found = hub._snapshot(kind + repo, revision)
                    files = found[1] if found else hub.repos[kind + repo]["files"]
                    under = under.strip("/")
                    inside = {n: d for n, d in files.items() if not under or n.startswith(under + "/")}
                    if "recursive=false" in self.path.lower():  # one level: its files and its folders
                        depth = under.count("/") + 1 if under else 0
                        folders = sorted({"/".join(n.split("/")[:depth + 1]) for n in inside
                                          if n.count("/") > depth})
                        inside = {n: d for n, d in inside.items() if n.count("/") == depth}
                    else:
                        folders = []
                    # All in one page (no Link header, so no next page).
                    return self._reply(200, [{"type": "directory", "path": f, "oid": "0" * 40} for f in folders]
                                       + [{"type": "file", "path": name, "size": len(data),
                                           "oid": hashlib.sha1(data).hexdigest()}
                                          for name, data in sorted(inside.items())])
                if api:  # model_info / dataset_info, at the head or at /revision/<rev>
                    repo, _, revision = path[len(api):].partition("/revision/")
                    if not self._readable(kind + repo):
                        return
                    found = hub._snapshot(kind + repo, revision or "main")
                    if found is None:
                        return self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                    return self._reply(200, {"id": repo, "sha": found[0], "private": hub.repos[kind + repo]["private"],
                                             "siblings": [{"rfilename": name} for name in sorted(found[1])]})
                if self._file(send_body=True):
                    return
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
                    oid = hub._commit(repo, header["summary"], sorted(files), sorted(deleted))
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid,
                                             "pullRequestUrl": None})
                self._reply(404, {"error": f"not served by the stand-in: {path}"})

        return Handler

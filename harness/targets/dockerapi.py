"""Docker's API calls as operations in a scenario's history: OpLog, and the docker client
whose every HTTP request is one (`api`, named by method and path template).

A subclass of docker's own low-level client, not a proxy or a hook: docker-py offers no request
hook, and APIClient.request is the one place every call passes through.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
import requests

from harness.observe.history import History

# What a call to dockerd raises when it fails: the client's errors and the transport's.
API_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
_requests = itertools.count(1)
# Where the object ids sit in an API path: named as a template, so ops group by call.
_ID_IN_PATH = re.compile(r"/(?:containers|images|exec)/(?!(?:create|json|load|prune)\b)[^/]+")
_API_VERSION = re.compile(r"^/v\d+\.\d+(?=/)")


class OpLog:
    """Docker's operations in the scenario's history, as `invoke` then `ok` or `fail` with
    host "dockerd" (the runtime host's events have the same shape): the history says which
    time was dockerd's own and the timeline draws it. Without a history it logs nothing."""

    def __init__(self, history: History | None) -> None:
        self.history = history

    @contextlib.contextmanager
    def op(self, op: str, **args: Any) -> Iterator[None]:
        if self.history is None:
            yield
            return
        req = next(_requests)
        self.history.append("invoke", host="dockerd", op=op, req=req, args=args)
        t0 = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.history.append("fail", host="dockerd", op=op, req=req,
                                elapsed_s=round(time.monotonic() - t0, 4),
                                error={"type": type(exc).__name__, "message": str(exc)[:300]})
            raise
        self.history.append("ok", host="dockerd", op=op, req=req,
                            elapsed_s=round(time.monotonic() - t0, 4))


class LoggedAPIClient(docker.APIClient):
    """docker's low-level client (a requests.Session), each HTTP request an `api` op in
    the history, named by method and path template (`POST /containers/{id}/start`)."""

    def __init__(self, log: OpLog, **kwargs: Any) -> None:
        self._oplog = log           # before super(): version="auto" asks the daemon at once
        super().__init__(**kwargs)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = _API_VERSION.sub("", urlparse(url).path)
        path = _ID_IN_PATH.sub(lambda m: m.group(0).rsplit("/", 1)[0] + "/{id}", path)
        with self._oplog.op("api", call=f"{method.upper()} {path}"):
            return super().request(method, url, *args, **kwargs)


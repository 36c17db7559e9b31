"""uvicorn, set up for Vigil: requests the HTTP parser rejects get a problem+json 400 too.

uvicorn answers a request it cannot parse (an invalid ``Content-Length``, a malformed request
line or header, ...) itself, before the app sees it, with a ``text/plain`` 400. The protocol
class here answers with the same problem document as every other error
(``urn:vigil:problem:bad_request``). ``vigil serve`` and ``vigil demo`` use it; with plain
uvicorn pass ``--http service.server:ProblemH11Protocol``.
"""

from __future__ import annotations

from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.errors import PROBLEM_MEDIA_TYPE, problem

BAD_REQUEST_DETAIL = "the HTTP request could not be parsed (request line, headers or framing)"


def bad_request_body() -> bytes:
    """The problem document sent for an unparsable request."""
    return problem(400, "bad_request", BAD_REQUEST_DETAIL).model_dump_json().encode()


class ProblemH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose parser-level 400 is ``application/problem+json``."""

    def send_400_response(self, msg: str) -> None:
        body = bad_request_body()
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        event = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
        self.transport.write(self.conn.send(event))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


def uvicorn_config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` for ``app`` that uses :class:`ProblemH11Protocol`."""
    return uvicorn.Config(app, http=ProblemH11Protocol, **kwargs)

"""The HTTP server's request handling in front of the endpoints: the body limit, UTF-8 bodies, the direct route of
one endpoint, and 422 answers that name the offending field."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qdup.serving.schemas import FORM_TAGS


def _error_body(field: str, msg: str, kind: str) -> dict[str, Any]:
    return {"error": f"{field}: {msg}", "detail": [{"loc": ["body"], "field": field, "msg": msg, "type": kind}]}


class BodyLimit:
    """Refuse a request body over `limit` bytes before anything parses it: by Content-Length, and while streaming."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(_error_body("body", f"request body is over {self.limit:,} bytes", "too_large"), status_code=413)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await too_large(scope, receive, send)
                    return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            # Over the limit mid-stream: answer 413 ourselves and tell the app the client left,
            # so that nothing parses the body and nothing the app says afterwards is sent.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p != "body" and p not in FORM_TAGS]
    return ".".join(parts) or "body"


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each offending field (dotted path), without echoing the input back."""
    details = []
    for e in exc.errors():
        loc = e.get("loc", ())
        field = "body" if e.get("type") == "json_invalid" else _field_path(loc)
        details.append({"loc": list(loc), "field": field, "msg": e.get("msg"), "type": e.get("type")})
    first = details[0] if details else {"field": "body", "msg": "invalid request"}
    return JSONResponse({"error": f"{first['field']}: {first['msg']}", "detail": details}, status_code=422)


class Utf8JsonRoute(APIRoute):
    """A route whose JSON body must be UTF-8 (RFC 8259): any other bytes are invalid JSON, 422 like the rest.

    FastAPI would answer 400, a status the API does not document, for a body that does not decode.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method == "POST":
                body = await request.body()  # kept by the request: the handler parses the same bytes
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    error = {"type": "json_invalid", "loc": ("body", exc.start), "msg": "JSON body is not valid UTF-8", "input": {}}
                    raise RequestValidationError([error]) from None
            return await handler(request)

        return checked


def _json_media_type(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


class DirectJsonRoute:
    """One POST route answered without FastAPI's routing, dependency solving and request objects, for bodies that
    validate: for a one-pair request that machinery costs the event loop more than the model call it wraps (the
    serving benchmark, bench/results). The body is validated by the route's own pydantic model from the raw bytes (pydantic's JSON
    parser); a body that does not validate, or is not `application/json`, goes on to FastAPI unchanged (its bytes
    replayed), so that errors, 422s and the OpenAPI schema stay FastAPI's. `answer` is the endpoint's own function.
    """

    def __init__(self, app: ASGIApp, path: str, body_type: Any, answer: Callable[[Any], Coroutine[Any, Any, Response]]):
        self.app, self.path, self.answer = app, path, answer
        self.adapter = TypeAdapter(body_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST"
                or not _json_media_type(scope["headers"])):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left (or the body limit answered): nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            parsed = self.adapter.validate_json(body)
        except ValidationError:
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        response = await self.answer(parsed)
        await response(scope, receive, send)

"""The HTTP server: OpenAI-compatible completions, native task endpoints, health, metrics, playground.

`create_app(models, config)` builds the ASGI app; `lstmgen serve` runs it with uvicorn. Each language
model gets a Scheduler (continuous batching); the other model kinds answer their native endpoint.
"""
from __future__ import annotations

import asyncio
import gc
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Dict, List, Optional

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as HTTPRequest

from ..errors import UserInputError
from ..generation import GenerationConfig
from .config import ServerConfig
from .guard import Guard
from .metrics import Metrics
from .chat_api import ChatRun
from .openai_api import CompletionRun
from .scheduler import Engine, QueueFull, Request, Scheduler
from .schema import ChatCompletionRequest, CompletionRequest, TextsRequest, error_body, sse

TASK_ENDPOINTS = {"translate": "translation", "classify": "text-classification", "tag": "token-classification"}


class ApiError(Exception):
    """An error answered as {"error": {...}} with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, retry_after: Optional[int] = None) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, type, param, code)
        self.headers = {"Retry-After": str(retry_after)} if retry_after else None


def as_api_error(e: Exception) -> ApiError:
    """What the scheduler reported, as the error a client gets."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, UserInputError):
        return ApiError(400, str(e), param=option_param(str(e)))
    if isinstance(e, QueueFull):
        return ApiError(503, str(e), "server_error", code="unavailable", retry_after=1)
    return ApiError(500, f"internal error: {type(e).__name__}: {e}", "server_error")


def option_param(message: str) -> Optional[str]:
    """The option a GenerationConfig error names (its messages start with the option's name)."""
    word = message.split(" ", 1)[0]
    return word if word in GenerationConfig.__dataclass_fields__ else None


def create_app(models: Dict[str, object], config: Optional[ServerConfig] = None, engine_thread: bool = True):
    """The ASGI app serving `models` (name -> pipeline).

    Args:
        models: the loaded pipelines by the name clients use (`model` in requests).
        config: the limits (default ServerConfig()).
        engine_thread: run the engine (all torch work) on a thread of its own while the app is up; False
            leaves `app.engine.run()` to the caller (`lstmgen serve` runs it on the main thread).
    """
    config = config or ServerConfig()
    metrics = Metrics()
    schedulers = {name: Scheduler(name, p, config.max_batch, config.max_queue, metrics, config.stream_interval,
                                  config.inline_prefill)
                  for name, p in models.items() if getattr(p, "task", None) == "text-generation"}
    engine = Engine(schedulers, config.threads)

    @asynccontextmanager
    async def lifespan(app):
        gc.freeze()  # the models and torch live as long as the server: full collections skip them (cli.py)
        if engine_thread:
            engine.start()
        yield
        engine.stop()

    app = FastAPI(title="lstmgen", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.schedulers, app.state.metrics, app.state.config, app.state.engine = schedulers, metrics, config, engine
    metrics.gauge("lstmgen_queue_depth", lambda: {(("model", n),): s.queue_depth for n, s in schedulers.items()},
                  "Requests waiting for a batch slot")
    metrics.gauge("lstmgen_active_rows", lambda: {(("model", n),): s.active_rows for n, s in schedulers.items()},
                  "Sequences being generated")

    # -- errors, all in one shape ----------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        err = exc.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            msg, param = f"the body is not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})", None
        else:
            param = loc[0] if loc else None
            msg = f"{'.'.join(loc) or 'body'}: {err.get('msg')}"
        return JSONResponse(error_body(msg, param=param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if exc.status_code == 404 and request.url.path not in KNOWN_PATHS:  # not "Not Found": what is here
            message = (f"no endpoint {request.url.path}; this server has POST /v1/completions, "
                       "POST /v1/chat/completions, POST /v1/translate, /v1/classify, /v1/tag, GET /v1/models, "
                       "/health, /metrics")
        return JSONResponse(error_body(message, "invalid_request_error" if exc.status_code < 500
                                       else "server_error"), exc.status_code)

    # -- endpoints -------------------------------------------------------------------------------------
    def model_or_404(name: str):
        if name not in models:
            raise ApiError(404, f"model {name!r} is not loaded; GET /v1/models lists the models "
                                f"({', '.join(models)})", param="model", code="model_not_found")
        return models[name]

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": 0, "owned_by": "lstmgen",
                "task": getattr(models[name], "task", "unknown")}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card(n) for n in models]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        model_or_404(name)
        return model_card(name)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(models),
                "queue_depth": {n: s.queue_depth for n, s in schedulers.items()}}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(resources.files("lstmgen.server").joinpath("static/index.html").read_text("utf-8"))

    def language_model(name: str, endpoint: str):
        pipeline = model_or_404(name)
        if getattr(pipeline, "task", None) != "text-generation":
            raise ApiError(400, f"model {name!r} is a {pipeline.task} model; {endpoint} needs a language model",
                           param="model")
        return pipeline

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HTTPRequest):
        return await complete(CompletionRun(body, language_model(body.model, "/v1/completions"), config), http)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, http: HTTPRequest):
        pipeline = language_model(body.model, "/v1/chat/completions")
        try:
            run = ChatRun(body, pipeline, config)
        except ValueError as e:
            raise ApiError(400, str(e), param=getattr(e, "param", None)) from None
        return await complete(run, http)

    async def complete(run: CompletionRun, http: HTTPRequest):
        """A completion or chat request, from its checks to its response or stream."""
        body = run.body
        try:
            run.prepare()
            if run.wants_prompt_logprobs:
                run.prompt_scores = await on_engine(run.score_prompts)
        except UserInputError as e:
            raise ApiError(400, str(e), param=option_param(str(e))) from None
        except ValueError as e:
            raise ApiError(400, str(e), param=getattr(e, "param", None)) from None
        if run.beam and body.stream:
            raise ApiError(400, "beam search (num_beams > 1) cannot stream; set stream to false", param="stream")
        if run.beam:  # one row per prompt: its beams are the search's own
            req = Request(run.prompts, run.options, asyncio.get_running_loop(), prompt_ids=run.given_ids, beam=True)
        else:
            req = Request(run.rows, run.options, asyncio.get_running_loop(), prompt_ids=run.row_ids)
        try:
            engine.submit(body.model, req)
        except QueueFull as e:
            raise ApiError(429, f"{e}; retry shortly", "rate_limit_error", code="queue_full", retry_after=1) from None
        deadline = time.monotonic() + config.request_timeout
        if body.stream:
            return StreamingResponse(stream_events(run, req, deadline), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                for event in await next_events(req, deadline, http):
                    if event[0] == "done":
                        observe_done(body.model, req)
                        return run.response(job=req.job)
                    if event[0] == "error":
                        raise as_api_error(event[1])
        finally:
            req.cancel()

    async def on_engine(fn, *args, **kwargs):
        """fn's result, computed on the engine thread (where all torch work runs)."""
        try:
            return await asyncio.wrap_future(engine.call(fn, *args, **kwargs))
        except QueueFull as e:
            raise as_api_error(e) from None

    async def next_events(req: Request, deadline: float, http: Optional[HTTPRequest] = None) -> List[tuple]:
        """The request's next events (all that are ready); ApiError 503 past the deadline; cancels the
        request when the client of a non-streamed request has gone (checked every quarter second, also
        while events keep coming: a long completion must not run on for a client that hung up)."""
        if http is not None and time.monotonic() - req.checked > 0.25:
            req.checked = time.monotonic()
            if await http.is_disconnected():
                req.cancel()
                raise ApiError(499, "client closed the request")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                req.cancel()
                raise ApiError(503, f"the request took longer than request_timeout "
                                    f"({config.request_timeout:g} s); retry later or ask for fewer tokens",
                               "server_error", code="timeout", retry_after=1)
            try:
                first = await asyncio.wait_for(req.events.get(), min(left, 1.0))
                break
            except asyncio.TimeoutError:
                if http is not None and await http.is_disconnected():
                    req.cancel()
                    raise ApiError(499, "client closed the request") from None
        events = [first]
        while not req.events.empty():
            events.append(req.events.get_nowait())
        return events

    def observe_done(model: str, req: Request) -> None:
        metrics.inc("lstmgen_prompt_tokens_total", req.job.prompt_tokens, "Prompt tokens", model=model)
        if req.first_token_at is not None:
            metrics.observe("lstmgen_time_to_first_token_seconds", req.first_token_at - req.created,
                            "Time from arrival to the first generated token", model=model)

    async def stream_events(run: CompletionRun, req: Request, deadline: float):
        try:
            for chunk in run.stream_start():
                yield chunk
            while True:
                try:
                    events = await next_events(req, deadline)
                except ApiError as e:
                    yield sse(e.body)
                    break
                out = []
                for event in events:
                    if event[0] == "pieces":
                        out += run.stream_pieces(req.job, event[1])
                    elif event[0] == "done":
                        observe_done(run.body.model, req)
                        out += run.stream_end(req.job)
                    else:
                        out.append(sse(as_api_error(event[1]).body))
                if out:
                    yield "".join(out)
                if events[-1][0] in ("done", "error"):
                    break
            yield "data: [DONE]\n\n"
        finally:
            req.cancel()  # a client that disconnects mid-stream frees its rows at the next step

    for endpoint, task in TASK_ENDPOINTS.items():
        app.post(f"/v1/{endpoint}")(task_handler(endpoint, task, models, model_or_404, config, on_engine))

    guard = Guard(app, config.max_body_bytes, config.max_concurrent_requests, metrics, KNOWN_PATHS)
    guard.engine = engine
    return guard


def task_handler(endpoint: str, task: str, models, model_or_404, config: ServerConfig, on_engine):
    """The handler of a native endpoint: the pipeline's method of that name over a list of texts."""
    async def handle(body: TextsRequest):
        pipeline = model_or_404(body.model)
        if getattr(pipeline, "task", None) != task:
            kinds = [n for n, p in models.items() if getattr(p, "task", None) == task]
            raise ApiError(400, f"model {body.model!r} is a {getattr(pipeline, 'task', 'unknown')} model; "
                                f"/v1/{endpoint} needs a {task} model (loaded: {', '.join(kinds) or 'none'})",
                           param="model")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or len(texts) > config.max_batch:
            raise ApiError(400, f"input must hold 1 to {config.max_batch} texts", param="input")
        try:
            results = await on_engine(getattr(pipeline, endpoint), texts, **body.options)
        except (UserInputError, TypeError) as e:
            raise ApiError(400, str(e), param="options") from None
        return {"object": "list", "model": body.model, "data": results}
    handle.__name__ = endpoint
    return handle


KNOWN_PATHS = {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
               "/v1/translate", "/v1/classify", "/v1/tag"}

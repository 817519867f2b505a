"""`lstmgen serve`: load the model folders and run the app with uvicorn."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

from ..errors import UserInputError
from ..folder import bundled_models, read_json, resolve_model_dir
from ..pipelines import MODEL_TYPE, load
from .config import ServerConfig


def load_models(names_or_dirs: Sequence[str], bundled: bool = True, device: str = "cpu",
                dtype: Optional[str] = None) -> Dict[str, object]:
    """Pipelines by the name clients use: a folder's name, or a bundled model's name.

    Args:
        names_or_dirs: model folders or bundled names.
        bundled: also serve the bundled models (shakespeare-char).
        device: where to put the models.
        dtype: the language models' weights, "float32" or "bfloat16" (TextGenerator.from_pretrained); the
            other pipelines stay float32.
    """
    models: Dict[str, object] = {}
    wanted = list(names_or_dirs) + [b for b in (bundled_models() if bundled else []) if b not in names_or_dirs]
    for spec in wanted:
        name = spec if spec in bundled_models() else Path(resolve_model_dir(spec)).resolve().name
        if name in models:
            raise UserInputError(f"two models are named {name!r}; rename one of the folders")
        is_lm = read_json(resolve_model_dir(spec) / "config.json").get("model_type", MODEL_TYPE) == MODEL_TYPE
        models[name] = load(spec, device=device, **({"dtype": dtype} if dtype and is_lm else {}))
    if not models:
        raise UserInputError("no models to serve: give model folders, or drop --no-bundled")
    return models


def serve(names_or_dirs: Sequence[str], config: ServerConfig, bundled: bool = True, device: str = "cpu",
          log_level: str = "info", dtype: Optional[str] = None) -> None:
    """Serve until interrupted (blocks).

    The models are loaded and the engine (all torch work) runs on this, the main thread; the HTTP server
    runs on another (scheduler.py says why: one OpenMP team keeps the LSTM step fast).
    """
    import signal
    import socket
    import threading

    import uvicorn

    from .app import create_app

    with socket.socket() as probe:  # a taken port is a one-line error before anything is loaded
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as e:
            raise UserInputError(f"cannot listen on {config.host}:{config.port}: {e.strerror}") from None
    app = create_app(load_models(names_or_dirs, bundled, device, dtype), config, engine_thread=False)
    engine = app.engine
    # uvicorn's own connection limit sits above ours, so that past max_concurrent_requests clients get
    # our 503 in the API's error shape; idle keep-alive connections close after 5 s.
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                                           timeout_keep_alive=5,
                                           limit_concurrency=config.max_concurrent_requests * 2 + 64))

    def http() -> None:
        try:
            server.run()
        finally:
            engine.stop()  # the HTTP side ended (Ctrl-C, or it could not bind): stop the engine too

    thread = threading.Thread(target=http, name="lstmgen-http", daemon=True)
    signal.signal(signal.SIGTERM, lambda *_: engine.stop())
    thread.start()
    where = f"http://{config.host}:{config.port}"
    print(f"lstmgen: serving {where} (playground at {where}/, OpenAI API at {where}/v1)", flush=True)
    try:
        engine.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    if not server.started:
        raise UserInputError(f"could not serve on {config.host}:{config.port} (is the port in use?)")

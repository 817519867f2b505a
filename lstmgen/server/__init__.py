"""The HTTP server (FastAPI): OpenAI-compatible completions with continuous batching, native task
endpoints, health, Prometheus metrics and a web playground."""
from .config import ServerConfig

__all__ = ["create_app", "ServerConfig"]


def __getattr__(name: str):
    # create_app is imported on first use (PEP 562): FastAPI takes ~0.4 s to import, and every CLI
    # command builds `serve`'s flags from ServerConfig
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

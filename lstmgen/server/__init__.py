"""The HTTP server (FastAPI): OpenAI-compatible completions with continuous batching, native task
endpoints, health, Prometheus metrics and a web playground."""
from .app import create_app
from .config import ServerConfig

__all__ = ["create_app", "ServerConfig"]

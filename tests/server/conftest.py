"""A live server on a free port (uvicorn in a thread), with the tiny model, the bundled model and stand-in
pipelines for the task endpoints (the real translation, classification and tagging models come with their
own issues; these check the routing and the error shapes)."""
import socket
import threading
import time

import pytest
import uvicorn

import lstmgen
from lstmgen.server import ServerConfig, create_app


class StandInClassifier:
    task = "text-classification"

    def classify(self, texts, **options):
        return [{"label": "positive" if "good" in t else "negative", "score": 0.9} for t in texts]


class StandInTranslator:
    task = "translation"

    def translate(self, texts, **options):
        return [{"translation": " ".join(reversed(t.split()))} for t in texts]


class StandInTagger:
    task = "token-classification"

    def tag(self, texts, **options):
        return [{"tokens": t.split(), "tags": ["O"] * len(t.split()), "entities": []} for t in texts]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app served by uvicorn in a background thread."""

    def __init__(self, models, config: ServerConfig) -> None:
        self.config = config
        self.app = create_app(models, config)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning",
                                                    timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    @property
    def schedulers(self):
        return self.app.app.state.schedulers

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def served_models(tiny_model_dir):
    return {"tiny": lstmgen.load(tiny_model_dir), "shakespeare-char": lstmgen.load("shakespeare-char"),
            "sentiment": StandInClassifier(), "reverse": StandInTranslator(), "ner": StandInTagger()}


@pytest.fixture(scope="session")
def server(served_models):
    s = LiveServer(served_models, ServerConfig(max_tokens=4096, max_prompt_tokens=512, max_body_bytes=64 * 1024,
                                               stream_interval=0.0))
    yield s
    s.stop()


@pytest.fixture()
def make_server(served_models):
    """A server with its own limits, stopped after the test."""
    started = []

    def make(**limits):
        s = LiveServer({"tiny": served_models["tiny"]}, ServerConfig(**limits))
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()

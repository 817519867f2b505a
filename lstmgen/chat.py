"""Chat: a conversation rendered into one prompt by a Jinja chat template, as transformers'
`apply_chat_template` does, so that a language model trained on plain text can answer chat clients.

A model folder may hold `chat_template.jinja` (transformers' file name; `lstmgen train lm --chat-template
FILE` puts one there). Without one, DEFAULT_TEMPLATE writes the conversation as a transcript,

    System: You are terse.
    User: Who comes?
    Assistant:

and the answer ends where the model starts the user's next line (DEFAULT_STOP). A template sees
`messages` (each a role and its text), `add_generation_prompt`, and `bos_token` / `eos_token` (empty:
an LSTM model here has none), and may call `raise_exception(message)`, as in transformers.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from .errors import UserInputError

TEMPLATE_FILE = "chat_template.jinja"
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
DEFAULT_STOP = ["\nUser:", "\nSystem:"]  # the default transcript's next turn: where an answer ends

Content = Union[str, Sequence[Dict[str, object]], None]


def message_text(content: Content) -> str:
    """A message's text: a string, or OpenAI's list of content parts (only text parts can be read)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise UserInputError(f"a language model reads text only; a content part of type {part.get('type')!r} "
                                 "cannot be used")
        texts.append(part["text"])
    return "".join(texts)


@lru_cache(maxsize=16)
def _compiled(template: str):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    # transformers renders in a sandbox too, with the same trimming: a template cannot reach Python objects
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateError as e:
        raise UserInputError(f"the chat template does not parse: {e}") from None


def render(messages: Sequence[Dict[str, object]], template: Optional[str] = None,
           add_generation_prompt: bool = True) -> str:
    """The prompt for `messages` ({"role", "content"} dicts) under `template` (default: the transcript)."""
    from jinja2 import TemplateError

    if not messages:
        raise UserInputError("messages must hold at least one message")
    plain = [{"role": str(m.get("role", "")), "content": message_text(m.get("content"))} for m in messages]
    try:
        return _compiled(template or DEFAULT_TEMPLATE).render(messages=plain, add_generation_prompt=add_generation_prompt,
                                                              bos_token="", eos_token="")
    except TemplateError as e:
        raise UserInputError(f"the chat template refused these messages: {e}") from None


def read_template(folder: Path) -> Optional[str]:
    """The folder's chat template, if it has one."""
    path = Path(folder) / TEMPLATE_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


def check_template(template: str) -> str:
    """The template, once it is known to render a short conversation (else a one-line error)."""
    render([{"role": "user", "content": "hello"}], template)
    return template


__all__ = ["DEFAULT_STOP", "DEFAULT_TEMPLATE", "TEMPLATE_FILE", "check_template", "message_text", "read_template",
           "render"]

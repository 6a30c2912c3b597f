"""Text in and out of a served model: a Hugging Face tokenizer directory read with the ``tokenizers`` library (no
transformers in the serving process), its chat template rendered with Jinja2 as ``apply_chat_template`` renders
it, and generated tokens turned into text deltas that stop at a stop string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from foundation.errors import InputError

UNFINISHED = "\ufffd"  # what decoding shows for the first bytes of a character whose last bytes are still to come


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _raise(message: str) -> None:
    raise TemplateError(message)


class ServedTokenizer:
    """The tokenizer of ``directory`` (``tokenizer.json``; ``tokenizer_config.json`` with its special tokens and
    chat template, or the template in ``chat_template.jinja``)."""

    def __init__(self, directory: str | Path):
        root = Path(directory)
        if not (root / "tokenizer.json").is_file():
            raise InputError(f"{root}: no tokenizer.json (--tokenizer takes a Hugging Face tokenizer directory)")
        try:
            self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        except Exception as e:  # the library's own parse error, one line
            raise InputError(f"{root / 'tokenizer.json'}: not a tokenizer ({str(e).splitlines()[0]})") from None
        config_file = root / "tokenizer_config.json"
        try:
            self.config: dict[str, Any] = json.loads(config_file.read_text()) if config_file.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{config_file}: not JSON ({e})") from None
        template = self.config.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if template is None and (root / "chat_template.jinja").is_file():
            template = (root / "chat_template.jinja").read_text()
        self.special = {k: _token_text(v) for k, v in self.config.items() if k.endswith("_token")}
        self._template = None
        if isinstance(template, str):
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
            try:
                self._template = env.from_string(template)
            except TemplateError as e:
                raise InputError(f"{root}: the chat template does not parse ({e})") from None

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def eos_ids(self) -> list[int]:
        eos = self.special.get("eos_token")
        found = self.tokenizer.token_to_id(eos) if eos else None
        return [found] if found is not None else []

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, with the special tokens the tokenizer adds (a BOS) unless ``special_tokens`` is
        False (a rendered chat template holds them already, as HF's ``apply_chat_template`` tokenizes)."""
        return self.tokenizer.encode(text, add_special_tokens=special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_text(self, token: int) -> str:
        """One token as text, special tokens included (a token's own bytes may be part of a character)."""
        return self.tokenizer.decode([token], skip_special_tokens=False)

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text of a conversation, ending where the assistant's reply begins."""
        if self._template is None:
            raise InputError("this tokenizer has no chat template: use /v1/completions")
        try:
            return self._template.render(messages=messages, add_generation_prompt=True,
                                         **{k: v for k, v in self.special.items() if v is not None})
        except TemplateError as e:
            raise InputError(f"the chat template refused these messages: {e}") from None


class TextStream:
    """Generated tokens as text deltas: everything decoded so far goes out, except a trailing unfinished
    character and a tail that may be the start of a stop string; a stop string ends the text before it. The
    deltas add up to the whole text (what a non-streamed response holds)."""

    def __init__(self, tokenizer: ServedTokenizer, stops: Sequence[str] = ()):
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False
        self._hold = max((len(s) for s in self.stops), default=1) - 1

    def push(self, token: int) -> str:
        """The text that can go out after ``token``; sets ``stopped`` when a stop string appeared."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        for stop in self.stops:
            at = text.find(stop, max(0, len(self.sent) - len(stop) + 1))
            if at >= 0:
                self.stopped = True
                return self._out(text[:at])
        safe = text[:len(text) - self._hold] if self._hold else text
        return self._out(safe.rstrip(UNFINISHED) if safe.endswith(UNFINISHED) else safe)

    def finish(self) -> str:
        """The rest of the text once generation has ended (nothing after a stop string)."""
        return "" if self.stopped else self._out(self.tokenizer.decode(self.ids))

    def _out(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

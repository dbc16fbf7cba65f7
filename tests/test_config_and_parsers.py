"""Settings resolution, data files and prompt-module inspection, without a pytest run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_dspy_local.core.data import Dataset, load_file
from pytest_dspy_local.core.declared import declared_names
from pytest_dspy_local.core.settings import Settings, for_prompt, resolve
from pytest_dspy_local.core.spec import prompt_name
from pytest_dspy_local.errors import PromptError, UsageError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_precedence_is_cli_then_environment_then_pyproject_then_default(tmp_path: Path) -> None:
    pyproject = write(tmp_path, "pyproject.toml", "[tool.dspy_local]\nthreshold = 0.9\nmax_tokens = 64\nseed = 3\n")
    settings, pinned = resolve({"threshold": "0.2"}, {"DSPY_LOCAL_THRESHOLD": "0.4", "DSPY_LOCAL_SEED": "7"}, pyproject)
    assert (settings.threshold, settings.seed, settings.max_tokens, settings.temperature) == (0.2, 7, 64, 0.0)
    assert pinned == {"threshold", "seed"}


def test_missing_pyproject_gives_the_defaults(tmp_path: Path) -> None:
    assert resolve({}, {}, tmp_path / "pyproject.toml") == (Settings(), frozenset())


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("threshold = 2", "threshold must be between 0 and 1"),
        ("max_examples = 'many'", "max_examples must be a whole number"),
        ("prompt_files = 3", "prompt_files must be a list of glob patterns"),
        ("optimizer = 'sgd'", "optimizer must be one of mipro, bootstrap, gepa"),
        ("allow_hosts = [1]", "allow_hosts must be a list of hosts"),
        ("strict_model = 'perhaps'", "strict_model must be true or false"),
        ("colour = 'blue'", "unknown key 'colour' in [tool.dspy_local]"),
        ("[tool.dspy_local.optimizers.adam]\nlr = 1", "unknown optimizer table [tool.dspy_local.optimizers.adam]"),
    ],
)
def test_bad_pyproject_values_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    header = "" if table.startswith("[") else "[tool.dspy_local]\n"
    pyproject = write(tmp_path, "pyproject.toml", header + table + "\n")
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve({}, {}, pyproject)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    pyproject = write(tmp_path, "pyproject.toml", "[tool.dspy_local\n")
    with pytest.raises(UsageError, match=r"pyproject\.toml: not valid TOML"):
        resolve({}, {}, pyproject)


def test_unreadable_pyproject_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in: root reads any file, so the refusal is raised by a patched read_text.
    pyproject = write(tmp_path, "pyproject.toml", "[tool.dspy_local]\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(UsageError, match=r"pyproject\.toml: cannot be read \(Permission denied\); make it readable"):
        resolve({}, {}, pyproject)


def test_per_prompt_table_yields_to_pinned_keys(tmp_path: Path) -> None:
    pyproject = write(tmp_path, "pyproject.toml", "[tool.dspy_local.prompts.triage]\nmax_tokens = 32\nseed = 5\n")
    settings, pinned = resolve({}, {"DSPY_LOCAL_SEED": "9"}, pyproject)
    triage = for_prompt(settings, pinned, "triage")
    assert (triage.max_tokens, triage.seed) == (32, 9)
    assert for_prompt(settings, pinned, "other").max_tokens == 256


def test_relative_gguf_paths_fall_back_to_the_rootdir(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"GGUF")
    settings = Settings(model="gguf:models/m.gguf").with_paths_from(tmp_path)
    assert settings.model == f"gguf:{tmp_path / 'models' / 'm.gguf'}"
    assert Settings(model="gguf:/abs/m.gguf").with_paths_from(tmp_path).model == "gguf:/abs/m.gguf"


def test_jsonl_rows_remember_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "prompt_x.jsonl", '{"q": "a", "a": "b"}\n\n{"q": "c", "a": "d"}\n')
    assert [row.source for row in load_file(path)] == ["prompt_x.jsonl:1", "prompt_x.jsonl:3"]


def test_yaml_rows_remember_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "prompt_x.yaml", "# data\n- q: a\n  a: b\n- q: c\n  a: d\n")
    assert [row.source for row in load_file(path)] == ["prompt_x.yaml:2", "prompt_x.yaml:4"]


def test_csv_rows_and_data_hash(tmp_path: Path) -> None:
    path = write(tmp_path, "prompt_x.csv", "q,a\nhello,world\n")
    dataset = Dataset.from_file(path)
    assert [(r.values, r.source) for r in dataset.rows] == [({"q": "hello", "a": "world"}, "prompt_x.csv:2")]
    assert len(dataset.sha256) == 64 and dataset.origin == "prompt_x.csv"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["not", "a", "mapping"]\n', "prompt_x.jsonl:1: each example must be a mapping"),
        ("\n\n", "prompt_x.jsonl: no examples"),
    ],
)
def test_bad_jsonl(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PromptError, match=re.escape(message)):
        load_file(write(tmp_path, "prompt_x.jsonl", text))


def test_non_utf8_data_is_named(tmp_path: Path) -> None:
    path = tmp_path / "prompt_x.jsonl"
    path.write_bytes(b'{"q": "ok"}\n{"q": "caf\xe9"}\n')
    message = r"prompt_x\.jsonl:2: not UTF-8 text \(byte 0xe9: invalid continuation byte\); save the file as UTF-8$"
    with pytest.raises(PromptError, match=message):
        load_file(path)


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("TEMPLATE = 'x'\n", set()),
        ("program = 1\ndef metric(e, p, trace=None):\n    return 1\n", {"program", "metric"}),
        ("from app.prompts import program\n", {"program"}),
        ("try:\n    import x\nexcept ImportError:\n    metric = None\n", {"metric"}),
        ("def helper():\n    program = 1\n", set()),
    ],
)
def test_declared_names_reads_top_level_bindings_without_importing(
    tmp_path: Path, source: str, names: set[str]
) -> None:
    assert declared_names(write(tmp_path, "prompt_x.py", source)) == names


def test_prompt_name() -> None:
    assert prompt_name(Path("prompts/prompt_triage.py")) == "triage"
    assert prompt_name(Path("prompt_.py")) == "prompt_"

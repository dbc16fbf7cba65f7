"""Egress guard around prompt items, the audit receipt, and the digest-keyed project cache."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import OLLAMA_MODEL, OPENAI_MODEL, PromptWriter

from pytest_dspy_local.models.backends.embedded import default_model_path
from pytest_dspy_local.plugin.options import AUDIT, BACKEND, BASE_URL, CLEAR_CACHE, MODEL, NO_CACHE

EXFILTRATING_METRIC = '''
import socket


def metric(example, prediction, trace=None):
    try:
        socket.getaddrinfo("exfil.invalid", 443)
    except Exception:
        pass  # a metric (or a library) that swallows the refusal
    return example.sentiment == prediction.sentiment

threshold = 0.4
'''


def test_swallowed_egress_still_fails_the_item_naming_host_and_code(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt(extra=EXFILTRATING_METRIC)
    result = pytester.runpytest(f"{AUDIT}=audit.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "dspy-local blocked a connection to exfil.invalid:443 (socket.getaddrinfo) from *prompt_sentiment.py:*"
        " in metric* not in the allowed hosts (loopback)*add it to allow_hosts in [[]tool.dspy_local[]]*"
    ])
    receipt = json.loads((pytester.path / "audit.json").read_text())
    (item,) = receipt["items"]
    assert [a["endpoint"] for a in item["blocked_attempts"]] == ["exfil.invalid:443"] * 4
    assert all(a["blocked"] for a in item["blocked_attempts"])


def test_allow_hosts_from_pyproject(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra=EXFILTRATING_METRIC)
    pytester.makepyprojecttoml('[tool.dspy_local]\nallow_hosts = ["exfil.invalid"]\n')
    pytester.runpytest().assert_outcomes(passed=1)


def test_allow_egress_records_instead_of_blocking(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra=EXFILTRATING_METRIC)
    pytester.runpytest("--dspy-allow-egress", f"{AUDIT}=audit.json").assert_outcomes(passed=1)
    receipt = json.loads((pytester.path / "audit.json").read_text())
    assert receipt["blocking"] is False
    attempts = receipt["items"][0]["blocked_attempts"]
    assert attempts and not any(a["blocked"] for a in attempts)


@pytest.mark.fresh_cache
def test_audit_of_an_embedded_run_lists_only_in_process(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.4\n")
    pytester.runpytest(f"{AUDIT}=audit.json").assert_outcomes(passed=1)
    receipt = json.loads((pytester.path / "audit.json").read_text())
    assert receipt["totals"] == {"model_calls": 4, "cached_answers": 0, "blocked_attempts": 0,
                                 "endpoints": ["in-process"]}
    (item,) = receipt["items"]
    assert item["nodeid"] == "prompt_sentiment.py::sentiment"
    assert item["model"]["digest"].startswith("sha256:") and item["data"]["origin"] == "prompt_sentiment.jsonl"
    assert item["prompt_tokens"] > 0 and item["completion_tokens"] > 0
    assert "Not covered" in receipt["coverage"]


LITELLM_AT_IMPORT = "import litellm  # noqa: F401  (fetches a price map at import unless told not to)\n"


def test_known_leaks_are_closed_in_a_fresh_process(pytester: pytest.Pytester, write_prompt: PromptWriter,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Fresh interpreter, none of the variables set: the plugin must set them before DSPy and
    # LiteLLM are imported (litellm's import-time fetch would otherwise retry during the item).
    for name in ("LITELLM_LOCAL_MODEL_COST_MAP", "LITELLM_OFFLINE_MODE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    write_prompt(extra=LITELLM_AT_IMPORT + "threshold = 0.4\n")
    result = pytester.runpytest_subprocess(f"{AUDIT}=audit.json")
    result.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "audit.json").read_text())["totals"]["blocked_attempts"] == 0


@pytest.mark.fresh_cache
def test_openai_backend_end_to_end_lists_the_server_endpoint(
    pytester: pytest.Pytester, write_prompt: PromptWriter, openai_url: str
) -> None:
    write_prompt(extra="threshold = 0.4\n")
    args = [f"{BACKEND}=openai", f"{BASE_URL}={openai_url}", f"{MODEL}={OPENAI_MODEL}", f"{AUDIT}=audit.json", "-v"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dspy-local model: smollm2 server:* (openai, http://127.0.0.1:*/v1)",
                                 "*PASSED (score 0.500 >= 0.400, n=4)*"])
    (item,) = json.loads((pytester.path / "audit.json").read_text())["items"]
    # Calls are counted per server URL; the concurrent requests' new connections per host:port.
    server = openai_url.split("//")[1].split("/")[0]
    assert item["endpoints"][openai_url] == 4
    assert set(item["endpoints"]) <= {openai_url, server}, "every call went to the configured server, nowhere else"


def test_ollama_backend_end_to_end_via_ollama_host(
    pytester: pytest.Pytester, write_prompt: PromptWriter, ollama_stub_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_stub_url)
    write_prompt(extra="threshold = 0.4\n")
    result = pytester.runpytest(f"{MODEL}={OLLAMA_MODEL}", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dspy-local: backend ollama, model smollm2:135m",
                                 "dspy-local model: smollm2:135m sha256:* (ollama, http://127.0.0.1:*)",
                                 "*PASSED (score 0.500 >= 0.400, n=4)*"])


@pytest.mark.fresh_cache
def test_another_model_digest_does_not_share_the_cache(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.4\n")
    pytester.runpytest().stdout.fnmatch_lines(["model calls: 4 (4 to the model, 0 cached)*"])
    # Same weights plus one trailing byte: llama.cpp loads it, its sha256 differs.
    other = pytester.path / "other.gguf"
    shutil.copyfile(default_model_path(), other)
    with other.open("ab") as handle:
        handle.write(b"\0")
    pytester.runpytest(f"{MODEL}=gguf:{other}").stdout.fnmatch_lines(["model calls: 4 (4 to the model, 0 cached)*"])
    pytester.runpytest(f"{MODEL}=gguf:{other}").stdout.fnmatch_lines(["model calls: 4 (0 to the model, 4 cached)*"])


@pytest.mark.fresh_cache
def test_no_cache_and_clear_cache(pytester: pytest.Pytester, write_prompt: PromptWriter) -> None:
    write_prompt(extra="threshold = 0.4\n")
    pytester.runpytest()
    pytester.runpytest(NO_CACHE).stdout.fnmatch_lines(["model calls: 4 (4 to the model, 0 cached)*"])
    pytester.runpytest().stdout.fnmatch_lines(["model calls: 4 (0 to the model, 4 cached)*"])
    pytester.runpytest(CLEAR_CACHE).stdout.fnmatch_lines(["model calls: 4 (4 to the model, 0 cached)*"])


def test_baseline_from_another_model_warns_or_fails_when_strict(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    write_prompt(extra="threshold = 0.4\n")
    pytester.runpytest("--dspy-update-baseline").assert_outcomes(passed=1)
    baseline = pytester.path / "__prompt_snapshots__" / "prompt_sentiment.baseline.json"
    document = json.loads(baseline.read_text())
    document["model"]["digest"] = "sha256:" + "0" * 64
    baseline.write_text(json.dumps(document))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*was recorded with model digest sha256:000000000000, this run uses sha256:*"])
    result = pytester.runpytest("--dspy-strict-model")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*re-record it with --dspy-update-baseline or --optimize (strict_model is on)"])

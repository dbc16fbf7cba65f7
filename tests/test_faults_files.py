"""The faults table (README, Troubleshooting), file faults: big data, damaged or newer snapshots, writes that fail.

Real files and the real embedded model throughout; a snapshot directory made immutable with
``chattr +i`` (the kernel refuses writes there even to root, whom ``chmod`` does not stop); two
real pytest processes sharing one answer cache. One stand-in, named where it is used: a full
disk, which no test here can make on demand. Every case checks the exact line, pytest's exit
code (1: a failing prompt item, 4: a usage error) and that no traceback is shown.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SENTIMENT_ROWS, PromptWriter, make_immutable
from test_faults import lit, outcome

from pytest_dspy_local.core.data import Dataset
from pytest_dspy_local.errors import PromptError
from pytest_dspy_local.plugin.options import MAX_EXAMPLES, NO_CACHE, UPDATE_BASELINE

PASSING = "threshold = 0.0\n"  # these tests are about files, not the model's accuracy
SNAPSHOTS = "__prompt_snapshots__"
FIX_BASELINE = "restore it from git, or delete it and record a new one with `pytest --dspy-update-baseline`"
FIX_PROGRAM = "restore it from git, or delete it and record a new one with `pytest --optimize`"
# What plugin/outcomes.py's stopping_on_write_errors says to do about a snapshot it cannot write.
FIX_NOT_PERMITTED = "make it writable (chmod u+w; chattr -i if it is immutable) and run again"
FIX_DISK_FULL = "free disk space and run again"


def baseline_path(pytester: pytest.Pytester) -> Path:
    return pytester.path / SNAPSHOTS / "prompt_sentiment.baseline.json"


def record_baseline(pytester: pytest.Pytester, write_prompt: PromptWriter) -> Path:
    """A sentiment prompt with a real baseline (``--dspy-update-baseline``); returns the baseline file."""
    write_prompt(extra=PASSING)
    pytester.runpytest(UPDATE_BASELINE).assert_outcomes(passed=1)
    return baseline_path(pytester)


def add_row(pytester: pytest.Pytester) -> None:
    """One more example: the next --dspy-update-baseline has a different baseline to write."""
    with (pytester.path / "prompt_sentiment.jsonl").open("a") as handle:
        handle.write(json.dumps({"review": "Fine, nothing special", "sentiment": "positive"}) + "\n")


# --- a 100 MB data file ------------------------------------------------------------------------

PEAK_CONFTEST = '''
import resource


def pytest_unconfigure(config):
    with open("peak_kb.txt", "w") as handle:
        handle.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
'''


def peak_rss_mb(pytester: pytest.Pytester, rows_file: Path) -> float:
    """Run pytest in a fresh process on ``rows_file`` with --dspy-max-examples=3; its peak RSS in MB.

    No answer cache: both runs load the model and ask it, so they differ only in the data file.
    """
    shutil.copyfile(rows_file, pytester.path / "prompt_sentiment.jsonl")
    result = pytester.runpytest_subprocess(f"{MAX_EXAMPLES}=3", NO_CACHE)
    result.assert_outcomes(passed=1)
    return int((pytester.path / "peak_kb.txt").read_text()) / 1024


def test_100_mb_data_file_is_streamed_in_bounded_memory(
    pytester: pytest.Pytester, write_prompt: PromptWriter, tmp_path: Path
) -> None:
    # ~100k rows of 1 kB (long reviews): holding the file's text costs 100 MB, its parsed rows more.
    write_prompt(extra=PASSING, rows=None)
    pytester.makeconftest(PEAK_CONFTEST)
    rows = [json.dumps({**r, "note": "x" * 1000}) + "\n" for r in SENTIMENT_ROWS]
    tiny, big = tmp_path / "tiny.jsonl", tmp_path / "big.jsonl"
    tiny.write_text("".join(rows))
    with big.open("w") as handle:
        for _ in range(100_000 // len(rows)):
            handle.write("".join(rows))
    assert big.stat().st_size > 100e6
    baseline = peak_rss_mb(pytester, tiny)
    peak = peak_rss_mb(pytester, big)
    assert peak - baseline < 60, f"peak RSS {peak:.0f} MB on 100 MB of data, {baseline:.0f} MB on 4 rows"


def test_data_digest_covers_the_whole_file_when_rows_are_limited(tmp_path: Path) -> None:
    path = tmp_path / "prompt_x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SENTIMENT_ROWS) + "not json\n")
    with pytest.raises(PromptError, match=r"prompt_x\.jsonl:5: not valid JSON"):  # rows past the limit are checked
        Dataset.from_file(path, limit=2)
    path.write_text("".join(json.dumps(r) + "\n" for r in SENTIMENT_ROWS))
    dataset = Dataset.from_file(path, limit=2)
    assert [r.source for r in dataset.rows] == ["prompt_x.jsonl:1", "prompt_x.jsonl:2"]
    assert dataset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == Dataset.from_file(path).sha256


# --- damaged or newer snapshots ----------------------------------------------------------------


def test_baseline_hand_edited_into_invalid_json_names_the_file_and_the_fix(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    path = record_baseline(pytester, write_prompt)
    text = path.read_text().replace('"n":', '"n"', 1)  # a colon lost in a hand edit
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(text)
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(f"{path}: not valid JSON ({error.value}); {FIX_BASELINE}"))
    # The fix works: without the file, --dspy-update-baseline records a new one.
    path.unlink()
    pytester.runpytest(UPDATE_BASELINE).assert_outcomes(passed=1)
    assert json.loads(path.read_text())["n"] == len(SENTIMENT_ROWS)


def test_program_snapshot_hand_edited_into_invalid_json_names_the_file_and_the_fix(
    pytester: pytest.Pytester, write_prompt: PromptWriter
) -> None:
    import dspy

    write_prompt(extra=PASSING)
    path = pytester.path / SNAPSHOTS / "prompt_sentiment.program.json"
    path.parent.mkdir()
    dspy.Predict("review -> sentiment").save(str(path))  # DSPy's own format, as --optimize writes it
    text = "<<<<<<< HEAD\n" + path.read_text()  # a merge conflict left in
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(text)
    result = pytester.runpytest()
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(f"{path}: not valid JSON ({error.value}); {FIX_PROGRAM}"))


@pytest.mark.parametrize(("written_by", "refused"), [("99.0.0", True), ("0.99.0", True), ("0.1.99", False)])
def test_snapshot_from_a_newer_plugin_release_says_upgrade(
    pytester: pytest.Pytester, write_prompt: PromptWriter, written_by: str, refused: bool
) -> None:
    from importlib.metadata import version

    path = record_baseline(pytester, write_prompt)
    document = json.loads(path.read_text())
    document["versions"]["pytest-dspy-local"] = written_by
    path.write_text(json.dumps(document))
    result = pytester.runpytest()
    if not refused:  # a patch release never changes the snapshot files
        result.assert_outcomes(passed=1)
        return
    outcome(result, pytest.ExitCode.TESTS_FAILED, lit(
        f"{path}: written by pytest-dspy-local {written_by}, newer than this {version('pytest-dspy-local')}; "
        "upgrade the plugin (pip install -U pytest-dspy-local) to read this snapshot"))


# --- snapshot writes that fail -----------------------------------------------------------------


def test_read_only_snapshot_directory_names_it_and_keeps_the_old_files(
    pytester: pytest.Pytester, write_prompt: PromptWriter, immutable: list[Path]
) -> None:
    # Real: the kernel refuses to create a file in an immutable directory, even for root (these
    # tests run as root, where `chmod a-w` would not stop the write).
    path = record_baseline(pytester, write_prompt)
    old = path.read_bytes()
    add_row(pytester)
    make_immutable(path.parent, immutable)
    result = pytester.runpytest(UPDATE_BASELINE)
    line = f"ERROR: dspy-local: cannot write {path.parent} (Operation not permitted); {FIX_NOT_PERMITTED}"
    outcome(result, pytest.ExitCode.USAGE_ERROR, lit(line), "stderr")
    assert path.read_bytes() == old
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_disk_full_while_writing_a_snapshot_leaves_the_old_one_whole(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = record_baseline(pytester, write_prompt)
    old = path.read_bytes()
    add_row(pytester)
    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        # Stand-in for a full disk: no test can fill one on demand. The bytes went to the page
        # cache; the file system reports ENOSPC when asked to keep them, as a full disk does.
        if SNAPSHOTS in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full)
    result = pytester.runpytest(UPDATE_BASELINE)
    outcome(result, pytest.ExitCode.USAGE_ERROR,
            lit(f"ERROR: dspy-local: cannot write {path} (No space left on device); {FIX_DISK_FULL}"), "stderr")
    assert path.read_bytes() == old
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind


# --- one answer cache, two runs at once ----------------------------------------------------------


@pytest.mark.fresh_cache
def test_two_runs_writing_one_answer_cache_at_once_both_pass(
    pytester: pytest.Pytester, write_prompt: PromptWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_prompt(extra=PASSING)
    monkeypatch.setenv("DSPY_LOCAL_CACHE_DIR", str(pytester.path / "answers"))
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    started = time.monotonic()
    runs = [subprocess.Popen(argv, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert time.monotonic() - started < 600
    third = pytester.runpytest_subprocess()
    third.assert_outcomes(passed=1)
    n = len(SENTIMENT_ROWS)
    third.stdout.fnmatch_lines([f"model calls: {n} (0 to the model, {n} cached) in 1 item(s)"])

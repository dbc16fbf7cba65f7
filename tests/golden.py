"""Golden outputs of `pytest example_project`: normalize what varies between identical runs, compare the rest.

Two identical runs (measured: same machine, fresh answer cache) differ only in timings, the
project's temporary path and pytest's platform header; every model answer, score and the JSON
report's other keys and values are kept byte-exact. The goldens live in tests/data/golden/;
regenerate them with scripts/update_goldens.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
UPDATE_ENV = "UPDATE_GOLDENS"  # set (scripts/update_goldens does) to overwrite the goldens instead of comparing
STEP_SUMMARY = "summary.md"
PROJECT = "<project>"
SECONDS = "<seconds>"
WIDTH = 80  # separator lines are re-centred to pytest's default width, whatever COLUMNS was
HEADER_PREFIXES = ("platform ", "rootdir: ", "plugins: ", "cachedir: ")
# File the first run writes in the project (or its "stdout") -> golden file name.
SOURCES = {"stdout": "terminal.txt", "r.json": "report.json", STEP_SUMMARY: "summary.md", "r.html": "report.html"}


def _separator(title: str, char: str) -> str:
    """A line as pytest's `TerminalWriter.sep` writes it at WIDTH columns."""
    fill = char * max((WIDTH - len(title) - 2) // 2, 1)
    line = f"{fill} {title} {fill}"
    return line + char if len(line) + 1 <= WIDTH else line


def _resep(line: str) -> str:
    """Re-centre a `=== title ===` line, whose padding depends on the title's (timing's) length."""
    if re.fullmatch(r"([=_-])\1{9,}", line):
        return line[0] * WIDTH
    match = re.fullmatch(r"([=_-])\1* (.*?) \1+", line)
    return _separator(match[2], match[1]) if match else line


PROGRESS = re.compile(r"dspy-local \S+: \d+/\d+ examples, score so far .*")


def _without_progress(text: str) -> str:
    """Drop progress lines (their number depends on timing) and the `-v` prefix they cut off.

    With `-v`, pytest writes an item's node id, then its status; a progress line in between ends
    that line, and pytest writes an empty line and the node id again with the status.
    """
    lines: list[str] = []
    for line in text.split("\n"):
        if PROGRESS.fullmatch(line.strip()):
            lines.append(PROGRESS.pattern)  # a marker: pytest follows a foreign line with an empty one
        elif not (line == "" and lines and lines[-1] == PROGRESS.pattern):
            lines.append(line)
    lines = [line for line in lines if line != PROGRESS.pattern]
    kept = [line for i, line in enumerate(lines)
            if not (line.endswith(" ") and i + 1 < len(lines) and lines[i + 1].startswith(line.rstrip() + " "))]
    return "\n".join(kept)


def terminal(text: str, project: str) -> str:
    """The `-v` terminal output without header, timings, progress, paths, or width-dependent padding."""
    text = _without_progress(text.replace(project, PROJECT))
    text = re.sub(r" \[\d+(?:\.\d+)?s\]$", f" [{SECONDS}]", text, flags=re.M)
    text = re.sub(r" in \d+(?:\.\d+)?s(?: \(\d+:\d\d:\d\d\))?(?= =+$)", f" in {SECONDS}", text, flags=re.M)
    text = re.sub(r" +(\[ *\d+%\])$", r" \1", text, flags=re.M)
    lines = [_resep(line) for line in text.split("\n") if not line.startswith(HEADER_PREFIXES)]
    return "\n".join(lines)


def report_json(text: str, project: str) -> str:
    """The JSON report, byte-exact but for each prompt's wall-clock `"seconds"`."""
    return re.sub(r'("seconds": )\d+\.\d+(?=,?$)', rf'\1"{SECONDS}"', text.replace(project, PROJECT), flags=re.M)


def summary_md(text: str, project: str) -> str:
    """The Markdown step summary (nothing in it varies; a path would)."""
    return text.replace(project, PROJECT)


def report_html(text: str, project: str) -> str:
    """The HTML report without each prompt's wall-clock seconds."""
    return re.sub(r"(cached\), )\d+(?:\.\d+)? s</dd>", rf"\1{SECONDS} s</dd>", text.replace(project, PROJECT))


NORMALIZERS: dict[str, Callable[[str, str], str]] = {
    "terminal.txt": terminal, "report.json": report_json, "summary.md": summary_md, "report.html": report_html,
}


def normalized(stdout: str, project: Path) -> dict[str, str]:
    """Each golden file's name and its normalized text, from one run's stdout and the files it wrote."""
    raw = {"stdout": stdout} | {name: (project / name).read_bytes().decode() for name in SOURCES if name != "stdout"}
    return {golden: NORMALIZERS[golden](raw[source], str(project)) for source, golden in SOURCES.items()}


def failure(name: str, expected: str, actual: str) -> str:
    """Why a golden comparison failed: a unified diff from the golden file to this run's output."""
    lines = difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                 f"tests/data/golden/{name}", f"this run's {name} (normalized)")
    return f"{name} differs from its golden file (if the change is intended: scripts/update_goldens)\n" + "".join(lines)


def write(outputs: dict[str, str], directory: Path = GOLDEN_DIR) -> None:
    """Store normalized outputs as the new goldens."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (directory / name).write_text(text, encoding="utf-8", newline="")

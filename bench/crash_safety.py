"""Crash safety: `pytest --optimize` killed with SIGKILL at random moments leaves every file old or new.

Issue 11. Copies example_project into a temporary directory twice; each copy keeps its answer
cache inside itself (`.dspy_cache/`, the plugin's default `cache_dir`). Every pytest runs on a
copy of the package taken at the start (`PYTHONPATH`), so others' edits to the working tree
mid-run do not count. In the reference copy one complete, uninterrupted `pytest --optimize=force`
from an empty cache gives the NEW state, the snapshot files (`__prompt_snapshots__/*.program.json`,
`*.prompt.md`, `*.baseline.json`) and every answer-cache entry, and the cold run's wall time.
The OLD state is the snapshot files before any run; a file byte-identical to its NEW version is
re-encoded (same content, other bytes) so that a kill can tell the two apart.

In the test copy (OLD snapshots, the reference's warm cache) one warm, uninterrupted run must
reproduce NEW byte for byte; it gives the warm run's wall time and when the session-end
snapshot flush starts and ends. Then `--kills` times: restore OLD, start `pytest --optimize=force`
in its own process group, SIGKILL the group, and check every file.

Where the kills land (seeded; `--seed`):
- `warm-timed`: the answer cache warm (no model calls, a fast run); the moment uniform over the
  measured warm wall time: start-up, optimization from the cache, evaluation, flush.
- `warm-write`: the answer cache warm; the snapshot directory is polled every 0.5 ms and the
  group is killed a uniform 0..W after the flush's first trace (a staged temp file or a
  changed file), W = 1.25x the flush's measured length (at least 10 ms). A uniform moment
  almost never lands in the flush, which lasts milliseconds; these do.
- `cold-timed`: the answer cache cold, so kills land while answers are being written to it;
  the moment uniform over the first `--cold-span` seconds (default 120, at most the measured
  cold wall time). The first cold kill starts from no cache, each later one from the cache the
  previous cold kill left, so together they reach further into the run than one would.
- `rename` (extra, after the others and the final plain run; `--no-rename-kills` skips them;
  needs strace): the flush renames its staged files one after another, microseconds apart, so
  no random moment lands between two renames. strace's fault injection SIGKILLs the run on
  entering each snapshot file's rename in turn; every such state gets a plain `pytest` too.

After every kill: each snapshot file is byte-identical to its OLD or its NEW version (or absent
where OLD had none), never anything else; every cache entry present opens (SQLite integrity
check on a copy of the database and its WAL), parses as JSON and is byte-identical to the
reference run's entry; files in the project that neither state has (a staged temp file that
the kill left behind) are listed as findings, and are violations if named like a snapshot file.
Prompts whose files came out part OLD, part NEW are findings too, and the copy's next plain
`pytest` is run on such a state. After the last kill, a plain `pytest` on whatever state it
left must pass. Any violation exits 1. Results go to bench/results-crash.json (`--out`).

    .venv/bin/python bench/crash_safety.py [--seed 11] [--kills 20] [--write-kills 7] [--cold-kills 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib

SNAPSHOT_DIR = "__prompt_snapshots__"
CACHE_DIR = ".dspy_cache"  # the plugin's default `cache_dir`, relative to the rootdir
CACHE_DB = "responses.sqlite3"
OPTIMIZE = "--optimize=force"
# What no state owns but runs legitimately create; everything else new in the tree is a finding.
IGNORED_PARTS = {"__pycache__", ".pytest_cache", CACHE_DIR, ".ruff_cache"}
POLL_S = 0.0005
# strace's log line of a rename: pid, source, target (os.replace is rename(2) here).
RENAME = re.compile(r'^(\d+)\s+rename\("([^"]+)", "([^"]+)"\)')
RUN_TIMEOUT_S = 7200.0


@dataclass
class Reference:
    """The two states every file is checked against, and the timings that place the kills."""

    old: dict[str, bytes]
    reencoded: list[str]  # files of OLD re-encoded because they were byte-identical to NEW
    new: dict[str, bytes]
    cache: dict[str, str]
    cold_s: float
    warm_s: float = 0.0
    flush_at_s: float = 0.0
    flush_len_s: float = 0.0
    others: set[str] = field(default_factory=set)  # files a complete run leaves outside the snapshots

    @property
    def dirs(self) -> list[Path]:
        """The snapshot directories, relative to the project."""
        return sorted({Path(n).parent for n in {*self.old, *self.new}})


@dataclass
class Kill:
    """One planned kill and what it found."""

    index: int
    mode: str  # warm-timed | warm-write | cold-timed | rename
    delay_s: float  # after start (timed) or after the flush's first trace (write); 0 for rename
    killed_at_s: float | None = None  # since start; None when the run finished first
    flush_seen_at_s: float | None = None
    exit: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file -> old | new | same | absent | VIOLATION
    cache: dict[str, Any] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    mixed_prompts: list[str] = field(default_factory=list)
    next_run: int | None = None  # exit code of the plain pytest run after it, if one was made
    violations: list[str] = field(default_factory=list)


# --- the project's files ---------------------------------------------------------------------


def copy_project(source: Path, dest: Path) -> Path:
    """A copy of ``source`` without an answer cache or caches of other tools."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*IGNORED_PARTS))
    return dest


def snapshot_files(project: Path) -> dict[str, bytes]:
    """Every file in every snapshot directory, by path relative to the project."""
    return {str(p.relative_to(project)): p.read_bytes()
            for d in sorted(project.rglob(SNAPSHOT_DIR)) for p in sorted(d.iterdir()) if p.is_file()}  # fmt: skip


def tree(project: Path) -> set[str]:
    """Every file of the project outside the ignored directories, relative to it."""
    return {str(p.relative_to(project)) for p in project.rglob("*")
            if p.is_file() and not IGNORED_PARTS & set(p.relative_to(project).parts)}  # fmt: skip


def restore(project: Path, files: Mapping[str, bytes]) -> None:
    """Make the snapshot directories hold exactly ``files`` (temp files left by a kill go too)."""
    for d in project.rglob(SNAPSHOT_DIR):
        shutil.rmtree(d)
    for name, content in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(content)


def set_cache(project: Path, source: Path | None) -> None:
    """Replace the copy's answer cache with ``source``'s (None: no cache at all)."""
    shutil.rmtree(project / CACHE_DIR, ignore_errors=True)
    if source is not None:
        shutil.copytree(source / CACHE_DIR, project / CACHE_DIR)


def checkpoint(project: Path) -> None:
    """Fold the reference cache's WAL into its database, so a copy of one file is the whole cache."""
    db = sqlite3.connect(project / CACHE_DIR / CACHE_DB)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def read_cache(project: Path) -> tuple[dict[str, str], str]:
    """The cache's entries and its integrity check, read from a copy (the copy's files stay as the kill left them)."""
    folder = project / CACHE_DIR
    if not (folder / CACHE_DB).exists():
        return {}, "absent"
    with tempfile.TemporaryDirectory(prefix="dspy-crash-cache-") as tmp:
        # Database and WAL, not the shared-memory index: SQLite rebuilds it, as the next run would.
        for suffix in ("", "-wal"):
            if (folder / f"{CACHE_DB}{suffix}").exists():
                shutil.copy2(folder / f"{CACHE_DB}{suffix}", Path(tmp) / f"{CACHE_DB}{suffix}")
        db = sqlite3.connect(Path(tmp) / CACHE_DB)
        try:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = db.execute("SELECT key, value FROM responses").fetchall() if "responses" in tables else []
        finally:
            db.close()
    return dict(rows), integrity


# --- running pytest --------------------------------------------------------------------------


def pytest_argv(*args: str) -> list[str]:
    """``python -m pytest`` with the given arguments, quiet, without pytest's own cache."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]


def fingerprint(dirs: list[Path]) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of every entry in the snapshot directories: what a flush changes."""
    prints = {}
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # renamed away between the listing and the stat
                continue
            prints[entry.path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return prints


@dataclass
class Watch:
    """A run of pytest as seen from outside: when it ended or was killed, when the flush began and ended."""

    wall_s: float
    returncode: int | None  # None: killed by us
    killed_at_s: float | None
    flush_seen_at_s: float | None
    flush_done_at_s: float | None
    output: str


def watch(project: Path, args: list[str], dirs: list[Path], done: Mapping[str, bytes] | None = None,
          kill_at_s: float | None = None, kill_after_flush_s: float | None = None,
          prefix: tuple[str, ...] = ()) -> Watch:  # fmt: skip
    """Run pytest in its own process group, polling the snapshot directories; SIGKILL it when asked.

    ``dirs``: the snapshot directories, relative to ``project``. ``kill_at_s``: seconds after
    start; ``kill_after_flush_s``: seconds after the flush's first trace. ``done``: the snapshot
    files that mark the flush's end (to time a complete run). ``prefix``: a command to run pytest
    under (strace).
    """
    paths = [project / d for d in dirs]
    before = fingerprint(paths)
    seen = finished = killed = None
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen([*prefix, *pytest_argv(*args)], cwd=project, env=benchlib.bench_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        while proc.poll() is None:
            now = time.perf_counter() - started
            if seen is None and fingerprint(paths) != before:
                seen = now
            if finished is None and seen is not None and done is not None and snapshot_files(project) == done:
                finished = now
            due = kill_at_s if kill_after_flush_s is None else None if seen is None else seen + kill_after_flush_s
            if (due is not None and now >= due) or now > RUN_TIMEOUT_S:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: pytest and anything it started
                killed = now
                break
            time.sleep(POLL_S)
        proc.wait()
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if killed is not None and killed > RUN_TIMEOUT_S:
        raise TimeoutError(f"pytest {' '.join(args)} ran longer than {RUN_TIMEOUT_S:g} s")
    return Watch(wall, None if killed is not None else proc.returncode, killed, seen, finished, text)


def must_pass(w: Watch, what: str) -> None:
    """Stop the benchmark when an uninterrupted run failed: nothing after it would mean anything."""
    if w.returncode != 0:
        tail = "\n".join(w.output.splitlines()[-25:])
        sys.exit(f"crash_safety: {what} exited {w.returncode}; cannot continue:\n{tail}")


# --- checking a state ------------------------------------------------------------------------


def classify(name: str, ref: Reference, now: Mapping[str, bytes]) -> str:
    """old | new | same (OLD == NEW) | absent (and OLD had none) | VIOLATION."""
    old, new, got = ref.old.get(name), ref.new.get(name), now.get(name)
    if got is None:
        return "absent" if old is None else "VIOLATION (removed)"
    if got == old == new:
        return "same"
    if got == new:
        return "new"
    if got == old:
        return "old"
    return "VIOLATION (neither old nor new)"


def mixed(files: Mapping[str, str]) -> list[str]:
    """Prompts (snapshot stems) with one file OLD and another NEW: a consistent set only per file."""
    by_prompt: dict[str, set[str]] = {}
    for name, verdict in files.items():
        stem = Path(name).name.split(".")[0]
        if verdict in ("old", "new", "absent"):
            by_prompt.setdefault(stem, set()).add("old" if verdict == "absent" else verdict)
    return sorted(stem for stem, kinds in by_prompt.items() if kinds == {"old", "new"})


def check_cache(ref: Reference, project: Path) -> tuple[dict[str, Any], list[str]]:
    """Counts of cache entries by verdict, and the violations among them."""
    try:
        entries, integrity = read_cache(project)
    except sqlite3.Error as exc:
        return {"error": str(exc)}, [f"cache: cannot be read ({exc})"]
    counts: dict[str, Any] = {"entries": len(entries), "identical": 0, "differs": 0, "unreadable": 0, "extra": 0,
              "integrity": integrity, "of_reference": len(ref.cache)}  # fmt: skip
    violations = [] if integrity in ("ok", "absent") else [f"cache: integrity_check says {integrity}"]
    for key, value in entries.items():
        try:
            readable = isinstance(json.loads(value), dict)
        except ValueError:
            readable = False
        verdict = "unreadable" if not readable else "extra" if key not in ref.cache else (
            "identical" if value == ref.cache[key] else "differs")  # fmt: skip
        counts[verdict] += 1
    violations += [f"cache: {counts[v]} entries {v}" for v in ("differs", "unreadable") if counts[v]]
    return counts, violations


def check(kill: Kill, ref: Reference, project: Path) -> None:
    """Fill in the kill's verdicts on every snapshot file, the cache and leftover files."""
    now = snapshot_files(project)
    names = sorted(set(ref.old) | set(ref.new))
    kill.files = {name: classify(name, ref, now) for name in names}
    kill.violations += [f"{name}: {v}" for name, v in kill.files.items() if v.startswith("VIOLATION")]
    kill.mixed_prompts = mixed(kill.files)
    kill.cache, cache_violations = check_cache(ref, project)
    kill.violations += cache_violations
    known = {*ref.old, *ref.new, *ref.others}
    kill.leftovers = sorted(tree(project) - known)
    # A leftover named like a snapshot file would be read by the next run: that is a violation.
    kill.violations += [f"{n}: leftover named like a snapshot file" for n in kill.leftovers
                        if n.endswith((".program.json", ".prompt.md", ".baseline.json"))]  # fmt: skip


def plain_run(project: Path) -> int:
    """A plain ``pytest`` in the copy, as a user's next run; its exit code."""
    done = benchlib.run(pytest_argv(), project, timeout=RUN_TIMEOUT_S)
    if done.returncode != 0:
        print("\n".join("      | " + line for line in done.output.splitlines()[-20:]))
    return done.returncode


# --- the plan and the kills ------------------------------------------------------------------


def plan(rng: random.Random, ref: Reference, args: argparse.Namespace) -> list[Kill]:
    """The kills in a seeded order, each with its seeded moment."""
    modes = ["warm-write"] * args.write_kills + ["cold-timed"] * args.cold_kills
    modes += ["warm-timed"] * (args.kills - len(modes))
    rng.shuffle(modes)
    window = max(1.25 * ref.flush_len_s, 0.01)
    spans = {"warm-timed": ref.warm_s, "warm-write": window, "cold-timed": min(ref.cold_s, args.cold_span)}
    return [Kill(i + 1, mode, round(rng.uniform(0, spans[mode]), 4)) for i, mode in enumerate(modes)]


def perform(kill: Kill, ref: Reference, project: Path, warm: Path, cold: Path) -> None:
    """Restore OLD, start the run, kill it as planned, check what it left.

    The cache comes from ``warm`` (the reference's) or, for a cold kill, from ``cold`` (what the
    previous cold kill left, kept there afterwards; none at first).
    """
    restore(project, ref.old)
    set_cache(project, warm if kill.mode != "cold-timed" else cold if (cold / CACHE_DIR).exists() else None)
    if kill.mode == "warm-write":
        w = watch(project, [OPTIMIZE], ref.dirs, kill_after_flush_s=kill.delay_s)
    else:
        w = watch(project, [OPTIMIZE], ref.dirs, kill_at_s=kill.delay_s)
    kill.flush_seen_at_s = None if w.flush_seen_at_s is None else round(w.flush_seen_at_s, 4)
    kill.killed_at_s = None if w.killed_at_s is None else round(w.killed_at_s, 4)
    kill.exit = "SIGKILL" if w.returncode is None else f"finished first (exit {w.returncode})"
    check(kill, ref, project)
    if kill.mode == "cold-timed" and (project / CACHE_DIR).exists():
        shutil.rmtree(cold / CACHE_DIR, ignore_errors=True)
        shutil.copytree(project / CACHE_DIR, cold / CACHE_DIR)  # as the kill left it, WAL and all


def renames(log: Path, project: Path) -> list[tuple[int, str]]:
    """The snapshot files' renames in a strace log: (n, file) for the n-th rename of the thread that made it."""
    counts: dict[str, int] = {}
    found = []
    for entry in log.read_text().splitlines():
        if match := RENAME.match(entry):
            pid, _, target = match.groups()
            counts[pid] = counts.get(pid, 0) + 1
            if SNAPSHOT_DIR in Path(target).parts:
                found.append((counts[pid], str(Path(target).relative_to(project))))
    return found


def strace(log: Path, inject_at: int | None = None) -> tuple[str, ...]:
    """strace following every thread, logging renames; with ``inject_at``, SIGKILL on entering that one.

    Not ``--seccomp-bpf``: with it, strace 6.1 did not inject at all. The count is per thread.
    """
    argv = ["strace", "-f", "-qq", "-o", str(log), "-e", "trace=rename"]
    return (*argv, "-e", f"inject=rename:signal=KILL:when={inject_at}") if inject_at else tuple(argv)


def rename_kills(ref: Reference, project: Path, warm: Path, first: int) -> list[Kill]:
    """Kill the run on entering each snapshot file's rename: the states between renames, deterministically.

    Random moments almost never land between two renames of the flush (microseconds apart);
    strace's fault injection delivers SIGKILL there. Each kill's state gets a plain ``pytest``.
    """
    restore(project, ref.old)
    set_cache(project, warm)
    log = project.parent / "strace.log"
    w = watch(project, [OPTIMIZE], ref.dirs, prefix=strace(log))
    must_pass(w, f"`pytest {OPTIMIZE}` under strace")
    points = renames(log, project)
    print(f"renames of snapshot files, in order: {[f'{n}: {Path(f).name}' for n, f in points]}")
    kills = []
    for i, (n, name) in enumerate(points):
        kill = Kill(first + i, "rename", 0.0)
        restore(project, ref.old)
        set_cache(project, warm)
        w = watch(project, [OPTIMIZE], ref.dirs, prefix=strace(log, n))
        kill.flush_seen_at_s = None if w.flush_seen_at_s is None else round(w.flush_seen_at_s, 4)
        # strace ends as its tracee did: killed by the same signal (-9), or exit 137 on some versions.
        kill.killed_at_s = round(w.wall_s, 4) if w.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) else None
        kill.exit = f"SIGKILL entering rename {n} ({Path(name).name})" if kill.killed_at_s else f"exit {w.returncode}"
        check(kill, ref, project)
        kill.next_run = plain_run(project)
        if kill.next_run != 0:
            kill.violations.append(f"the next plain pytest exited {kill.next_run}")
        print(line(kill, first + len(points) - 1), flush=True)
        kills.append(kill)
    return kills


def outcome(kill: Kill) -> str:
    """The kill's snapshot files as a whole: all old, all new, mixed (each file whole), or violation."""
    kinds = {v.split(" ")[0] for v in kill.files.values()} - {"same"}
    if "VIOLATION" in kinds:
        return "violation"
    kinds = {"old" if k == "absent" else k for k in kinds}
    return "mixed" if len(kinds) > 1 else kinds.pop() if kinds else "same"


def line(kill: Kill, total: int) -> str:
    """One summary line: when it was killed, which files came out old/new/absent, cache, leftovers."""
    when = "" if kill.killed_at_s is None else f" at {kill.killed_at_s:.3f}s"
    flush = "" if kill.flush_seen_at_s is None else f", flush began {kill.flush_seen_at_s:.3f}s"
    files = " ".join(f"{Path(n).name.replace('prompt_', '')}={v.split(' ')[0]}" for n, v in kill.files.items())
    c = kill.cache
    cache = (f"cache {c.get('entries')}/{c.get('of_reference')} entries, {c.get('identical')} identical, "
             f"{c.get('extra')} extra, {c.get('integrity')}") if "entries" in c else f"cache {c}"  # fmt: skip
    extra = []
    if kill.leftovers:
        extra.append(f"leftovers {[Path(n).name for n in kill.leftovers]}")
    if kill.mixed_prompts:
        extra.append(f"MIXED {kill.mixed_prompts}")
    if kill.next_run is not None:
        extra.append(f"next run exit {kill.next_run}")
    verdict = "ok" if not kill.violations else "VIOLATION: " + "; ".join(kill.violations)
    return (f"kill {kill.index:2d}/{total} {kill.mode:10s} delay {kill.delay_s:.4f}s: {kill.exit}{when}{flush}; "
            f"all {outcome(kill)}: {files}; {cache}{''.join('; ' + e for e in extra)} -> {verdict}")  # fmt: skip


# --- main --------------------------------------------------------------------------------------


def freeze_package(tmp: Path, reuse: bool) -> dict[str, Any]:
    """Run every pytest on a copy of the package taken now, so edits to the working tree mid-run do not count.

    ``PYTHONPATH`` puts the copy before the editable install (whose finder comes last in
    ``sys.meta_path``). With ``reuse``, the copy an earlier run took stays, as its reference did.
    """
    package = tmp / "package"
    if not (reuse and package.is_dir()):
        shutil.rmtree(package, ignore_errors=True)
        shutil.copytree(benchlib.ROOT / "pytest_dspy_local", package / "pytest_dspy_local",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package), os.environ.get("PYTHONPATH")]))
    git = ["git", "-C", str(benchlib.ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--short", "pytest_dspy_local"], capture_output=True, text=True).stdout
    return {"package_copy": str(package), "commit": head, "package_files_uncommitted": len(dirty.splitlines())}


def distinct(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """OLD, with each file that is byte-identical to NEW re-encoded so that a kill can tell them apart.

    JSON is re-indented (same content, so the run reads the same snapshot and writes the same
    NEW); Markdown gets one more trailing newline. The flush rewrites such a file, since it differs.
    """
    same = sorted(n for n in old if new.get(n) == old[n])
    changed = dict(old)
    for name in same:
        text = old[name]
        json_text = name.endswith(".json")
        changed[name] = (json.dumps(json.loads(text), indent=1) + "\n").encode() if json_text else text + b"\n"
    return changed, same


def reference(tmp: Path, reuse: bool) -> tuple[Reference, Path]:
    """The OLD and NEW states, the reference cache and the cold run's wall time, from the reference copy.

    ``reuse``: take them from the reference copy an earlier run left in ``tmp`` (``--keep``).
    """
    record, source = tmp / "reference.json", tmp / "source" / "example_project"
    ref_copy = tmp / "reference" / "example_project"
    if reuse and record.is_file():
        old = snapshot_files(source)
        cold_s = json.loads(record.read_text())["cold_s"]
        print(f"reference: reusing {ref_copy} (cold run {cold_s:.1f}s)")
        new = snapshot_files(ref_copy)
        return Reference(*distinct(old, new), new, read_cache(ref_copy)[0], cold_s), ref_copy
    for part in ("source", "reference"):
        shutil.rmtree(tmp / part, ignore_errors=True)
    # One copy of the repository's example_project, taken once: others may edit it meanwhile.
    copy_project(benchlib.EXAMPLE, source)
    copy_project(source, ref_copy)
    old = snapshot_files(source)
    print(f"reference: cold `pytest {OPTIMIZE}` in {ref_copy} (empty answer cache) ...", flush=True)
    cold = watch(ref_copy, [OPTIMIZE], sorted({Path(n).parent for n in old}))
    must_pass(cold, f"the reference's cold `pytest {OPTIMIZE}`")
    checkpoint(ref_copy)
    cache, integrity = read_cache(ref_copy)
    new = snapshot_files(ref_copy)
    print(f"reference: {cold.wall_s:.1f}s, {len(new)} snapshot files, {len(cache)} cache entries ({integrity})")
    record.write_text(json.dumps({"cold_s": cold.wall_s}) + "\n")
    return Reference(*distinct(old, new), new, cache, cold.wall_s), ref_copy


def calibrate(ref: Reference, project: Path, warm_source: Path) -> Watch:
    """A warm, uninterrupted run in the test copy: it must reproduce NEW; its timings place the kills."""
    restore(project, ref.old)
    set_cache(project, warm_source)
    w = watch(project, [OPTIMIZE], ref.dirs, done=ref.new)
    must_pass(w, f"the warm `pytest {OPTIMIZE}` in the test copy")
    got = snapshot_files(project)
    if got != ref.new:
        differ = sorted(n for n in set(got) | set(ref.new) if got.get(n) != ref.new.get(n))
        sys.exit(f"crash_safety: a warm run does not reproduce the reference's snapshot files ({differ}); "
                 "old-or-new cannot be checked")  # fmt: skip
    ref.others = tree(project) - set(ref.old) - set(ref.new)
    ref.warm_s = w.wall_s
    ref.flush_at_s = w.flush_seen_at_s or w.wall_s
    ref.flush_len_s = (w.flush_done_at_s or w.wall_s) - ref.flush_at_s
    print(
        f"calibration: warm run {w.wall_s:.2f}s, flush began {ref.flush_at_s:.3f}s, "
        f"took {ref.flush_len_s * 1000:.1f} ms"
    )
    return w


def parse_args() -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    p.add_argument("--seed", type=int, default=11, help="seeds the kills' order and moments (default 11)")
    p.add_argument("--kills", type=int, default=20, help="kills in all (default 20)")
    p.add_argument("--write-kills", type=int, default=7, help="of them, in the snapshot flush (default 7)")
    p.add_argument("--cold-kills", type=int, default=3, help="of them, with a cold answer cache (default 3)")
    p.add_argument("--cold-span", type=float, default=120.0,
                   help="cold kills land uniformly in this many first seconds of a cold run (default 120)")
    p.add_argument("--out", "--json-out", dest="out", type=Path, default=Path(__file__).parent / "results-crash.json",
                   help="write the results as JSON here (default bench/results-crash.json)")  # fmt: skip
    p.add_argument("--no-rename-kills", dest="rename_kills", action="store_false",
                   help="skip the extra kills on entering each snapshot rename (strace), made after the others")
    p.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it (default: a temp dir)")
    p.add_argument("--reuse-reference", action="store_true",
                   help="with --keep: reuse the reference (cold) run an earlier run left there")
    args = p.parse_args()
    if args.write_kills + args.cold_kills > args.kills:
        p.error("--write-kills plus --cold-kills exceed --kills")
    if args.reuse_reference and args.keep is None:
        p.error("--reuse-reference needs --keep DIR")
    return args


def main() -> None:
    """Run the reference, calibrate, kill, check, and judge."""
    args = parse_args()
    started = time.perf_counter()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dspy-bench-crash-") as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        package = freeze_package(tmp, args.reuse_reference)
        ref, ref_copy = reference(tmp, args.reuse_reference)
        shutil.rmtree(tmp / "test", ignore_errors=True)
        shutil.rmtree(tmp / "cold", ignore_errors=True)
        project = copy_project(tmp / "source" / "example_project", tmp / "test" / "example_project")
        calibrate(ref, project, ref_copy)
        unchanged = sorted(n for n in ref.new if ref.new.get(n) == ref.old.get(n))  # none, after distinct()
        kills = plan(random.Random(args.seed), ref, args)
        (tmp / "cold").mkdir(exist_ok=True)
        for kill in kills:
            perform(kill, ref, project, ref_copy, tmp / "cold")
            if kill.mixed_prompts:
                kill.next_run = plain_run(project)
                if kill.next_run != 0:
                    kill.violations.append(f"the next plain pytest exited {kill.next_run}")
            print(line(kill, len(kills)), flush=True)
        last = kills[-1] if kills else None
        final = plain_run(project)  # on whatever state the last kill left
        print(f"plain pytest after the last kill: exit {final}", flush=True)
        if args.rename_kills and shutil.which("strace"):
            kills += rename_kills(ref, project, ref_copy, len(kills) + 1)
        elif args.rename_kills:
            print("strace not found: no kills between renames")
    report(args, ref, kills, final, unchanged, time.perf_counter() - started, load_start, last, package)


def report(args: argparse.Namespace, ref: Reference, kills: list[Kill], final: int, unchanged: list[str],
           runtime: float, load_start: tuple[float, float, float], last: Kill | None,
           package: dict[str, Any]) -> None:  # fmt: skip
    """Print the verdict, write the JSON, exit 1 on any violation."""
    violations = [f"kill {k.index}: {v}" for k in kills for v in k.violations]
    if final != 0:
        violations.append(f"the plain pytest after the last kill exited {final}")
    leftovers = sorted({n for k in kills for n in k.leftovers})
    landed = {mode: sum(1 for k in kills if k.mode == mode and k.killed_at_s is not None)
              for mode in ("warm-timed", "warm-write", "cold-timed", "rename")}  # fmt: skip
    in_flush = sum(1 for k in kills if k.killed_at_s is not None and k.flush_seen_at_s is not None)
    tally = {o: sum(1 for k in kills if outcome(k) == o) for o in ("old", "new", "mixed", "violation")}
    tally["left temp files"] = sum(1 for k in kills if k.leftovers)
    findings = []
    if leftovers:
        findings.append(f"{sum(bool(k.leftovers) for k in kills)} kill(s) left {len(leftovers)} staged temp "
                        "file(s), `.<snapshot file>.<random>.tmp`, that no later run reads or removes (listed in "
                        "the JSON)")  # fmt: skip
    if any(k.mixed_prompts for k in kills):
        findings.append("kills " + ", ".join(str(k.index) for k in kills if k.mixed_prompts) +
                        " left a prompt's snapshot files part OLD, part NEW (each file whole)")  # fmt: skip
    if ref.reencoded:
        findings.append(f"OLD re-encoded (same content, other bytes) where it equalled NEW: {ref.reencoded}")
    if unchanged:
        findings.append(f"files identical in OLD and NEW (a kill cannot tell them apart): {unchanged}")
    verdict = "PASS" if not violations else "FAIL"
    print(f"== crash safety: {verdict}: {len(kills)} kills ({landed} landed before the run ended; "
          f"{in_flush} after the flush began); snapshot files {tally}; {len(violations)} violation(s); "
          f"final plain pytest exit {final}; "
          f"{runtime:.0f}s")  # fmt: skip
    for v in violations:
        print(f"   violation: {v}")
    for f in findings:
        print(f"   finding: {f}")
    result = {
        "name": "crash safety", "seed": args.seed, "verdict": verdict, "runtime_s": round(runtime, 1),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "optimize_flag": OPTIMIZE,
        "cores": os.cpu_count(), "load_average": {"start": load_start, "end": os.getloadavg()},
        "reference": {"cold_s": round(ref.cold_s, 3), "warm_s": round(ref.warm_s, 3),
                      "flush_began_s": round(ref.flush_at_s, 4), "flush_ms": round(ref.flush_len_s * 1000, 2),
                      "snapshot_files": sorted(ref.new), "cache_entries": len(ref.cache)},
        "kills": [{**k.__dict__, "outcome": outcome(k)} for k in kills], "tally": tally,
        "final_plain_pytest_exit": final,
        "last_kill_left": None if last is None else last.files,
        "violations": violations, "findings": findings, "package": package, "leftovers": leftovers,
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(f"   results: {args.out}")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()

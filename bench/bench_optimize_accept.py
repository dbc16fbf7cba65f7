"""Which `--optimize` runs change a snapshot: the point estimate under --optimize=force vs the paired-test rule.

example_project is optimized over several seeds (the seed moves the train / held-out split and
the optimizer's draws; same data, same embedded model). Each seed is ONE optimizer run, with
``--optimize`` (the paired test: McNemar exact for 0/1 metrics, at optimize_alpha 0.05); its JSON
report records the candidate's demos added and removed, so the same run says what both rules
decide: ``--optimize=force`` rewrites the snapshot whenever the candidate's demos differ from the
current program's (BootstrapFewShot changes nothing else); the paired test only when it keeps the
candidate. (Running --optimize rather than force saves the forced program's evaluation on every
row, which on 2 shared cores is most of the cost.) Then one prompt with a real, large gain (order references "ORD-nnnnn"
that the 135M model only writes after seeing demos; 60 rows, BootstrapFewShot) must be accepted
by the paired test. BootstrapFewShot keeps the bench within minutes on 2 shared cores (MIPROv2 on
example_project is about 200 model calls per prompt); a first plain run fills the answer cache
with the checked-in programs' answers, which every seed reuses.

    .venv/bin/python bench/bench_optimize_accept.py [--seeds 3] [--rows 60]
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Result

SNAPSHOTS = "prompts/__prompt_snapshots__"
OPTIMIZER = "--dspy-optimizer=bootstrap"
# Few demos: prompts stay short, so the 135M model answers quickly.
DEMOS = "\n[tool.dspy_local.optimizers.bootstrap]\nmax_bootstrapped_demos = 2\nmax_labeled_demos = 4\n"

ORDER_MODULE = '''"""Order references: the answer convention ("ORD-" and the digits) is shown only by examples."""

import dspy


class Reference(dspy.Signature):
    """Find the order reference in the customer's message."""

    message: str = dspy.InputField()
    reference: str = dspy.OutputField()


program = dspy.Predict(Reference)


def metric(example, prediction, trace=None):
    return prediction.reference.strip() == example.reference


threshold = 0.0
'''
MESSAGES = ("Hi, my order {n} has not arrived yet.", "Where is order number {n}? It is late.",
            "I want to return the items from order {n}.", "Order {n} was damaged in transit.",
            "Can you change the address for order {n}?", "Please cancel my order {n} today.")


def programs(project: Path) -> dict[str, bytes]:
    """The snapshot program files, by name."""
    return {p.name: p.read_bytes() for p in sorted((project / SNAPSHOTS).glob("*.program.json"))}


def optimization_rows(project: Path, seed: int, report: Path, select: list[str]) -> list[dict[str, Any]]:
    """One `--optimize` run at ``seed``; per prompt, what each rule decides."""
    args = ["-q", "prompts", "--optimize", OPTIMIZER, f"--dspy-json={report}", *select]
    done = benchlib.pytest(args, project, timeout=3600, env={**benchlib.bench_env(), "DSPY_LOCAL_SEED": str(seed)})
    rows = []
    for prompt in json.loads(report.read_text())["prompts"]:
        o = prompt.get("optimization")
        if o is None:
            continue
        # BootstrapFewShot changes demos only: force would rewrite the snapshot whenever they differ.
        changed = bool(o["demos_added"] or o["demos_removed"])
        rows.append({"seed": seed, "prompt": prompt["name"], "before": o["before"], "after": o["after"],
                     "gain": o["gain"], "ci": o["ci"], "p": o["p_value"], "rows": o["heldout"],
                     "won": len([c for c in o["changes"] if c["new_score"] > c["old_score"]]),
                     "lost": len([c for c in o["changes"] if c["new_score"] < c["old_score"]]),
                     "force_changes": changed, "paired_changes": bool(o["kept"]) and changed,
                     "wall": round(done.wall, 1)})
    return rows


def order_project(root: Path, rows: int) -> Path:
    """A project with the order-reference prompt and ``rows`` distinct messages."""
    rng = random.Random(1)
    numbers = rng.sample(range(10_000, 100_000), rows)
    (root / "prompts").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["prompts"]\n\n'
                                         "[tool.dspy_local]\nmax_tokens = 40\n" + DEMOS)
    (root / "prompts" / "prompt_reference.py").write_text(ORDER_MODULE)
    lines = [json.dumps({"message": MESSAGES[i % len(MESSAGES)].format(n=n), "reference": f"ORD-{n}"})
             for i, n in enumerate(numbers)]
    (root / "prompts" / "prompt_reference.jsonl").write_text("\n".join(lines) + "\n")
    return root


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The per-run table, Markdown."""
    lines = ["| seed | prompt | held-out | gain (95% CI) | won/lost | p | force changes snapshot | "
             "paired test changes snapshot |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['prompt']} | {r['before']:.3f} -> {r['after']:.3f} on {r['rows']} | "
                     f"{r['gain']:+.3f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}] | {r['won']}/{r['lost']} | "
                     f"{r['p']:.3g} | {'yes' if r['force_changes'] else 'no'} | "
                     f"{'yes' if r['paired_changes'] else 'no'} |")
    return lines


def claimed(rows: list[dict[str, Any]], key: str) -> str:
    """How many runs changed a snapshot under a rule, and the held-out gains they claimed."""
    gains = [r["gain"] for r in rows if r[key]]
    shown = ", ".join(f"{g:+.3f}" for g in gains) or "none"
    return f"{len(gains)} of {len(rows)} prompt runs changed a snapshot; gains claimed: {shown}"


def main() -> None:
    """Run the seeds and the large-gain prompt; print the table and both rules' totals."""
    p = benchlib.parser(__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rows", type=int, default=60)
    p.add_argument("-k", dest="select", default=None, help="only these example_project prompts (pytest -k)")
    args = p.parse_args()
    result = Result("optimize_accept", "snapshot changes: --optimize=force vs the paired test (same runs)",
                    "the paired test changes fewer snapshots on noise and still accepts the large gain")
    with benchlib.workdir("accept") as tmp:
        large = order_project(tmp / "large", args.rows)
        big = optimization_rows(large, 0, tmp / "large.json", [])
        print("\n".join(table(big)), flush=True)
        select = ["-k", args.select] if args.select else []
        project = tmp / "example"
        shutil.copytree(benchlib.EXAMPLE, project, ignore=shutil.ignore_patterns(".dspy_cache", "__pycache__"))
        rows: list[dict[str, Any]] = []
        for seed in range(args.seeds):
            # The paired rule rarely keeps a candidate; when it does, the next seed starts from that program.
            rows += optimization_rows(project, seed, tmp / f"seed{seed}.json", select)
            print("\n".join(table(rows)), flush=True)
    print("\n".join(table(rows + big)))
    for key, rule in (("force_changes", "--optimize=force"), ("paired_changes", "paired test")):
        print(f"{rule}: {claimed(rows, key)}")
        result.figures[rule] = claimed(rows, key)
    accepted = bool(big) and big[0]["paired_changes"]
    print(f"large gain ({args.rows} rows): {'accepted' if accepted else 'NOT accepted'} by the paired test")
    result.figures["runs"] = rows + big
    result.figures["large gain accepted"] = accepted
    force, paired = (sum(1 for r in rows if r[k]) for k in ("force_changes", "paired_changes"))
    result.ratios["snapshot changes force / paired"] = benchlib.ratio(force, paired)
    result.status = "ok" if accepted else "failed"
    benchlib.finish(result, args.json_out)


if __name__ == "__main__":
    main()

"""What an optimizer will cost before it runs: projected model calls, from its own settings.

The arithmetic follows DSPy 3.4's optimizers. MIPROv2 (``auto="light"``: 6 candidates, 10
trials for one predictor, validation set = 80% of the train rows, minibatches only above 50
validation rows): bootstrapped demo sets, proposal-model calls, then one full evaluation of
the current program and one evaluation per trial (plus periodic full evaluations when it
minibatches). BootstrapFewShot: train rows x rounds. GEPA: its metric-call budget. Every
figure is an upper bound: bootstrapping stops once it has its demos. The plugin's two held-out
evaluations (before and after) are added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# DSPy 3.4 constants (dspy/teleprompt/mipro_optimizer_v2.py, dspy/teleprompt/gepa/gepa.py)
MIPRO_AUTO = {"light": (6, 100), "medium": (12, 300), "heavy": (18, 1000)}  # candidates, validation rows
GEPA_AUTO = {"light": 6, "medium": 12, "heavy": 18}
MIN_MINIBATCH_ROWS = 50
DATA_SUMMARY_MAX_CALLS = 10


@dataclass(frozen=True)
class Projection:
    """Projected model calls of one prompt's optimization (upper bounds)."""

    optimizer: str
    task_calls: int  # the optimizer's calls to the task model
    prompt_calls: int  # its calls to the proposal model
    heldout_calls: int  # the plugin's held-out evaluations, before and after
    trials: int = 0  # MIPROv2 trials (0 for the others)
    trial_calls: int = 0  # task calls one trial makes (its minibatch or the validation set)
    how: str = ""  # the arithmetic, in words

    @property
    def optimizer_calls(self) -> int:
        """Calls the optimizer itself makes (what a budget in calls limits)."""
        return self.task_calls + self.prompt_calls

    @property
    def total(self) -> int:
        """Every call of the prompt's optimization."""
        return self.optimizer_calls + self.heldout_calls

    @property
    def line(self) -> str:
        """``projected at most 151 model calls: ...``."""
        return (f"projected at most {self.total} model calls: {self.task_calls} task + {self.prompt_calls} proposal "
                f"({self.how}), + {self.heldout_calls} for the held-out evaluations")


def _int(knobs: Mapping[str, Any], key: str, default: int) -> int:
    value = knobs.get(key, default)
    return default if value is None else int(value)


def _mipro(knobs: Mapping[str, Any], predictors: int, train: int) -> tuple[int, int, int, int, str]:
    """(task calls, proposal calls, trials, calls per trial, how) for MIPROv2."""
    validation = min(1000, max(1, int(train * 0.8)))
    own_train = train - validation
    zeroshot = _int(knobs, "max_bootstrapped_demos", 4) == 0 and _int(knobs, "max_labeled_demos", 4) == 0
    auto = knobs.get("auto", "light") if "num_candidates" not in knobs else None
    if auto is not None:
        candidates, validation_cap = MIPRO_AUTO[str(auto)]
        validation = min(validation, validation_cap)
        minibatch = validation > MIN_MINIBATCH_ROWS
        instructions = candidates if zeroshot else int(candidates * 0.5)
        variables = predictors * (1 if zeroshot else 2)
        trials = int(max(2 * variables * math.log2(candidates), 1.5 * candidates))
    else:
        candidates = instructions = _int(knobs, "num_candidates", 1)
        trials, minibatch = _int(knobs, "num_trials", 1), bool(knobs.get("minibatch", True))
    size, steps = _int(knobs, "minibatch_size", 35), _int(knobs, "minibatch_full_eval_steps", 5)
    per_trial = (size if minibatch else validation) * predictors
    demo_sets = 0 if zeroshot else max(0, candidates - 2)  # of N sets, 3 are zero-shot, labelled, unshuffled
    bootstrap = demo_sets * own_train * _int(knobs, "max_rounds", 1) * predictors
    fulls = 1 + ((trials // steps + (1 if trials % steps else 0)) if minibatch else 0)
    task = bootstrap + trials * per_trial + fulls * validation * predictors
    proposal = predictors * instructions
    if knobs.get("program_aware_proposer", True):
        proposal += predictors + 1
    if knobs.get("data_aware_proposer", True):
        batches = math.ceil(own_train / _int(knobs, "view_data_batch_size", 10))
        proposal += 2 + min(DATA_SUMMARY_MAX_CALLS, max(0, batches - 1))
    how = (f"bootstrap <= {bootstrap}, {trials} trials x {per_trial} + {fulls} full evaluation(s) x "
           f"{validation * predictors}")
    return task, proposal, trials, per_trial, how


def _gepa(knobs: Mapping[str, Any], predictors: int, train: int) -> tuple[int, str]:
    if knobs.get("max_metric_calls") is not None:
        metric_calls = int(knobs["max_metric_calls"])
    elif knobs.get("max_full_evals") is not None:
        metric_calls = int(knobs["max_full_evals"]) * train
    else:
        candidates = GEPA_AUTO[str(knobs.get("auto", "light"))]
        trials = int(max(2 * (predictors * 2) * math.log2(candidates), 1.5 * candidates))
        # GEPA.auto_budget with a validation set of the train rows (minibatch 35, full evaluation every 5)
        metric_calls = train + candidates * 5 + trials * 35 + ((trials + 1) // 5 + 1 + (1 if trials < 5 else 0)) * train
    return metric_calls * predictors, f"{metric_calls} metric calls, plus one reflection call per iteration"


def project(optimizer: str, knobs: Mapping[str, Any], predictors: int, train: int, heldout: int) -> Projection:
    """The projected calls of ``optimizer`` with ``knobs`` on a program of ``predictors`` predictors."""
    heldout_calls = 2 * heldout * predictors
    if optimizer == "mipro":
        task, proposal, trials, per_trial, how = _mipro(knobs, predictors, train)
        return Projection(optimizer, task, proposal, heldout_calls, trials, per_trial, how)
    if optimizer == "bootstrap":
        rounds = _int(knobs, "max_rounds", 1)
        return Projection(optimizer, train * rounds * predictors, 0, heldout_calls,
                          how=f"{train} train rows x {rounds} round(s)")
    task, how = _gepa(knobs, predictors, train)
    return Projection(optimizer, task, 0, heldout_calls, how=how)

"""The search itself: Ray Tune with an Optuna (TPE) searcher and ASHA early stopping.

For one cell key (method, dataset, size, IPC, distillation network) ``tune_cell`` samples
configurations from the method's search space, runs each as a trial (:mod:`.trial`) on the
training and validation splits, stops trials whose val-scored checkpoints fall behind (ASHA over
checkpoints), and stores every finished trial at once (so an interrupted search keeps them and a
new ``medbench tune`` resumes: stored trials warm-start the searcher and count against
``--trials``). Small validation sets flatter the best of many trials, so the chosen configuration
is not simply the top one: the ``rescore_top`` best are distilled again with fresh seeds and the
best mean over those seeds wins; both numbers are stored.

With ``workers=1`` (one trial at a time) a search is deterministic: the same seeds and trial count
give the same trials whether Ray runs in-process or on a cluster (``ray_address``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from medbench.core.errors import MedbenchError
from medbench.harness.grid import digest
from medbench.storage.tuning import Trial, TuningRecords, cell_key
from medbench.tuning.space import Dim
from medbench.tuning.trial import TrialContext, run_trial


@dataclass(frozen=True)
class TuneSettings:
    trials: int = 20  # in total for the cell key, stored trials included
    time_budget: float | None = None  # seconds for this invocation's search of one cell key
    workers: int = 1  # trials at once (1: deterministic)
    ray_address: str | None = None  # None: a local Ray instance; "auto" or HOST:PORT: a running cluster
    rescore_top: int = 3
    rescore_seeds: tuple[int, ...] = (1000, 1001)
    searcher_seed: int = 0
    # ASHA: checkpoints every trial gets before it can be stopped. The first checkpoint scores the
    # initial set, the same for every configuration, so the first rung that can judge is the second.
    grace_checkpoints: int = 2
    reduction_factor: int = 3


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tuning_id(context: TrialContext, space: Mapping[str, Dim], settings: TuneSettings) -> str:
    """What identifies a search: the cell, the fixed settings, the space, the objective, the seeds and
    the early-stopping rule (a search resumed under another ASHA rule would mix two kinds of trials)."""
    return digest({"context": asdict(context) | {"checkpoint_dir": None, "device": None, "data_root": None},
                   "space": {k: asdict(v) for k, v in sorted(space.items())},
                   "searcher_seed": settings.searcher_seed, "rescore": [settings.rescore_top,
                                                                        list(settings.rescore_seeds)],
                   "asha": [settings.grace_checkpoints, settings.reduction_factor]})


def _trainable(config: dict[str, Any], context: TrialContext) -> None:
    from ray import tune

    result = run_trial(config, context, tune.report)
    tune.report({"objective": result["objective"], "final": True, "status": result["status"],
                 "message": result["message"], "checkpoints": result["checkpoints"], "seconds": result["seconds"]})


def _ray_init(settings: TuneSettings) -> None:
    import ray

    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
    else:
        # "local": a new in-process instance even where a cluster started with `ray start` runs on this
        # machine (plain ray.init() would join that one).
        ray.init(address="local", num_cpus=settings.workers, include_dashboard=False, log_to_driver=False)


def _search(context: TrialContext, space: Mapping[str, Dim], settings: TuneSettings, records: TuningRecords,
            tid: str, key: str, done: list[Trial]) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    remaining = settings.trials - len(done)
    if remaining <= 0:
        return
    names = sorted(space)
    warm = [{k: t.config[k] for k in names} for t in done if all(k in t.config for k in names)]
    values = [t.value if t.value is not None else 0.0 for t in done if all(k in t.config for k in names)]
    # The sampler's seed: the searcher seed, the search (so two cells do not try the same points) and the
    # trials already stored (a resumed search would otherwise propose the same first points again: TPE
    # samples its start-up trials at random).
    seed = (settings.searcher_seed + int(tid, 16) + len(done)) % 2**31
    searcher = OptunaSearch(metric="objective", mode="max", seed=seed,
                            points_to_evaluate=warm or None, evaluated_rewards=values or None)
    max_t = _checkpoints_planned(context) + 1  # every checkpoint, then the trial's final report
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(max_t, settings.grace_checkpoints),
                              grace_period=settings.grace_checkpoints, reduction_factor=settings.reduction_factor)
    counter = {"n": len(done)}

    class StoreTrials(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            last = trial.last_result or {}
            status = last.get("status", "done") if last.get("final") else "stopped"
            self._store(trial, last, status, last.get("message", ""))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._store(trial, trial.last_result or {}, "failed", "the trial raised an error (see Ray's log)")

        def _store(self, trial: Any, last: dict, status: str, message: str) -> None:
            value = last.get("objective")
            config = {k: trial.config[k] for k in names}
            entry = Trial(counter["n"], config, None if status == "failed" else value,
                          int(last.get("checkpoints", last.get("training_iteration", 0))),
                          float(last.get("seconds", last.get("time_total_s", 0.0))), status, message)
            counter["n"] += 1
            records.add_trial(tid, key, context.objective, entry)
            shown = "—" if entry.value is None else f"{entry.value:.4f}"
            _log(f"trial {entry.trial + 1}/{settings.trials} {status}: {json.dumps(config, sort_keys=True)} "
                 f"-> val {context.objective} {shown}")

    # Stored trials are told to Optuna with their scores (evaluated_rewards): not run again.
    samples = remaining
    with tempfile.TemporaryDirectory(prefix="medbench-tune-") as scratch:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trainable, context=context), _resources(context, settings)),
            param_space={k: v.ray() for k, v in space.items()},
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=settings.workers),
                                        scheduler=scheduler, num_samples=samples, metric="objective", mode="max",
                                        time_budget_s=settings.time_budget),
            run_config=tune.RunConfig(storage_path=scratch, name=tid, callbacks=[StoreTrials()], verbose=0))
        started = time.monotonic()
        tuner.fit()
    # Ray Tune takes Ctrl-C itself and ends the run quietly: a search that stopped short of its trials
    # without running out of time was interrupted. What finished is stored; stop here as an interrupt.
    out_of_time = settings.time_budget is not None and time.monotonic() - started >= 0.9 * settings.time_budget
    if counter["n"] < settings.trials and not out_of_time:
        raise KeyboardInterrupt


def _resources(context: TrialContext, settings: TuneSettings) -> dict[str, float]:
    """One CPU per trial, and a share of a GPU when trials run on CUDA (Ray hides GPUs from tasks
    that ask for none)."""
    if context.device.startswith("cuda") or context.device == "auto":
        import torch

        if torch.cuda.is_available():
            return {"cpu": 1, "gpu": 1 / settings.workers}
    return {"cpu": 1}


def _checkpoints_planned(context: TrialContext) -> int:
    """How many val-scored checkpoints a full trial reports (iteration 0 included)."""
    iterations = int(context.params.get("iterations", 1) or 1)
    every = int(context.params.get("eval_every", iterations) or iterations)
    return 1 + -(-iterations // every)


def stored_trials(records: TuningRecords, tid: str) -> list[Trial]:
    frame = records.trials(tid)
    return [Trial(int(r.trial), json.loads(r.config), None if r.value != r.value else r.value, int(r.checkpoints or 0),
                  float(r.seconds or 0.0), r.status, r.message or "") for r in frame.itertuples()]


def tune_cell(context: TrialContext, space: Mapping[str, Dim], settings: TuneSettings,
              records: TuningRecords, rescore: Callable[..., dict] = run_trial) -> dict[str, Any]:
    """Search, store every trial, re-score the best with fresh seeds, store the choice; returns it."""
    key = cell_key(context.method, context.dataset, context.size, context.ipc, [context.model.name,
                                                                               context.model.options])
    tid = tuning_id(context, space, settings)
    done = stored_trials(records, tid)
    if done:
        _log(f"resuming tuning {tid}: {len(done)} of {settings.trials} trials stored")
    if len(done) < settings.trials:
        _ray_init(settings)
        _search(context, space, settings, records, tid, key, done)
    trials = [t for t in stored_trials(records, tid) if t.value is not None]
    if not trials:
        raise MedbenchError(f"no trial of {context.method} on {context.dataset} IPC {context.ipc} finished")
    ranked = sorted(trials, key=lambda t: (-t.value, t.trial))
    top, seen = [], set()
    for t in ranked:
        frozen = json.dumps(t.config, sort_keys=True)
        if frozen not in seen:
            seen.add(frozen)
            top.append(t)
        if len(top) == settings.rescore_top:
            break
    rescored = []
    for t in top:
        scores = [rescore(t.config, replace(context, seed=s, checkpoint_dir=None), lambda _r: None)["objective"]
                  for s in settings.rescore_seeds]
        rescored.append(sum(scores) / len(scores))
        _log(f"re-scored {json.dumps(t.config, sort_keys=True)}: search {t.value:.4f}, fresh seeds "
             f"{', '.join(f'{x:.4f}' for x in scores)}")
    best = max(range(len(top)), key=lambda i: (rescored[i], top[i].value, -top[i].trial))
    every = stored_trials(records, tid)
    budget = {"trials": len(every), "seconds": sum(t.seconds for t in every),
              "space": {k: v.describe() for k, v in sorted(space.items())}, "searcher": "optuna TPE",
              "scheduler": f"ASHA over checkpoints (grace {settings.grace_checkpoints}, "
                           f"reduction {settings.reduction_factor})", "search_seed": context.seed,
              "rescore": {"top": len(top), "seeds": list(settings.rescore_seeds)}}
    records.choose(key, tid, top[best].config, context.objective, top[best].value, rescored[best], budget)
    return {"key": key, "tuning_id": tid, "config": top[best].config, "value": top[best].value,
            "rescored": rescored[best], "budget": budget}

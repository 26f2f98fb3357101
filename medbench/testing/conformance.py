"""The conformance kit: run a registered method on tiny data and check the contract every built-in
method meets, one line per property (``medbench conform METHOD``, or :func:`assert_conforms` in a
plug-in's own pytest).

The properties (:data:`medbench.distill.contract.PROPERTIES`):

- ``search-space``: every declared field exists, every range is valid, and the params accept its ends.
- ``output``: a :class:`CondensedSet` of float32 N×C×H×W finite images, int64 labels in range (or
  float N×classes soft labels), IPC images of every class (all training images for ``full``), a
  positive learned lr if any.
- ``deterministic``: the same seed gives a bit-identical set (images, labels, extras, lr).
- ``seed``: another seed gives another set.
- ``test-split``: the method never opens the dataset's files while it runs (a tripwire on the
  ``open`` audit event: :mod:`medbench.testing.probes`), and with the file's test split replaced by
  other images (``prepare`` gets the poisoned split too) its set stays bit-identical.
- ``checkpoints``: it records val-scored checkpoints through ``task.checkpoint`` with increasing
  iterations, non-decreasing finite seconds and both val scores in [0, 1]; a selecting method's
  ``info["val_score"]`` is one of them.
- ``provenance``: an image it returns unchanged from the training split is named in
  ``extras["train_indices"]`` (what privacy audits and DD-Ranking read).
- ``resume``: interrupted midway (a KeyboardInterrupt from its progress callback) and run again with
  the same ``checkpoint_dir``, it continues from where it stopped and ends bit-identical to an
  uninterrupted run.
- ``budget``: with ``budget_seconds`` at 40 % of its unbudgeted distillation seconds, it stops early:
  its last checkpoint's seconds exceed the budget by at most the widest gap between its checkpoints.
- ``non-finite``: when every network's outputs turn NaN after its first iteration, it raises
  ``CellFailed`` (or returns non-finite images, which the harness fails): no finite set is stored
  as done.

A method exempts a property with a reason at registration (``exempt={"resume": "..."}``): the kit
prints "n/a: reason" for it. Every property not exempted is checked, and a check that cannot be made
fails with what is missing. Real data, when present (BreastMNIST under the data root), adds
``output`` and ``test-split`` on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import torch

from medbench.core.errors import CellFailed, MedbenchError
from medbench.data.catalog import load_dataset
from medbench.data.registry import DEFAULT_DATA_ROOT
from medbench.data.splits import Splits
from medbench.distill.budget import Budget
from medbench.distill.contract import DistillTask, Method, get_method
from medbench.harness.runner import fingerprint
from medbench.nn.models import ModelSpec
from medbench.testing import data as kit_data
from medbench.testing.checks import (
    IPC,
    Fail,
    NotApplicable,
    Trial,
    check_checkpoints,
    check_output,
    check_provenance,
    check_search_space,
    differences,
    need,
)
from medbench.testing.probes import ArmedSpec, Interrupted, Switch, watching

MODEL = ModelSpec("convnet", {"width": 8, "depth": 2, "norm": "instance"})
REAL_DATASET = "breastmnist"  # small (546 training images), two classes, imbalanced: the kit's real check
BUDGET_SHARE = 0.4


@dataclass(frozen=True)
class Outcome:
    """One property's verdict: ``pass``, ``fail`` or ``n/a``, with one line of detail."""

    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self) -> str:
        return f"{self.status.upper() if self.failed else self.status:4}  {self.name}: {self.detail}"

    def on(self, dataset: str) -> Outcome:
        """The same verdict, named for the dataset it was made on."""
        return dataclasses.replace(self, name=f"{self.name} [{dataset}]")


@contextlib.contextmanager
def _environment(workdir: Path) -> Iterator[None]:
    """Expert buffers and other caches go to the kit's folder, not the user's data root."""
    old = os.environ.get("MEDBENCH_EXPERTS")
    os.environ["MEDBENCH_EXPERTS"] = str(workdir / "experts")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MEDBENCH_EXPERTS", None)
        else:
            os.environ["MEDBENCH_EXPERTS"] = old


def resolve_params(method: Method, splits: Splits, workdir: Path,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The tiny settings the method declared (``conform_params``), then ``overrides``."""
    declared = method.conform_params
    if isinstance(declared, str):
        module, _, name = declared.partition(":")
        declared = getattr(import_module(module), name)
    values = dict(declared(splits, workdir) if callable(declared) else declared or {})
    return {**values, **(overrides or {})}


class Runner:
    """Runs one method on one dataset file under the kit's instruments."""

    def __init__(self, method: Method, values: Mapping[str, Any], splits: Splits, path: Path, workdir: Path,
                 watch: tuple[Path, ...]) -> None:
        self.method, self.splits, self.path, self.workdir, self.watch = method, splits, path, workdir, watch
        self.params = method.make_params(values)
        self._prepared: set[int] = set()
        self._runs = 0

    def prepare(self, splits: Splits) -> None:
        if self.method.prepare is not None and id(splits) not in self._prepared:
            self.method.prepare(splits, self.params, MODEL, None)
            self._prepared.add(id(splits))

    def run(self, seed: int = 0, *, splits: Splits | None = None, budget: float | None = None,
            checkpoint_dir: Path | None = None, interrupt: Callable[[int, int], bool] | None = None,
            model: ModelSpec = MODEL, on_report: Callable[[int], None] | None = None) -> Trial:
        splits = splits or self.splits
        self._runs += 1
        trial = Trial()

        def progress(done: int, total: int) -> None:
            trial.reports.append(done)
            if on_report is not None:
                on_report(done)
            if interrupt is not None and interrupt(done, total):
                raise Interrupted

        task = DistillTask(
            train=splits.train, val=splits.val, num_classes=splits.num_classes, ipc=IPC if self.method.uses_ipc else 0,
            seed=seed, device=splits.device, normalize=splits.normalize, model=model,
            checkpoint_dir=checkpoint_dir or self.workdir / "checkpoints" / f"run{self._runs}", progress=progress,
            on_checkpoint=lambda it, s, sc: trial.checkpoints.append((it, s, dict(sc))),
            budget=Budget("seconds", budget) if budget is not None else None,
        )
        torch.manual_seed(seed)  # as the harness does, for methods that draw from the global generator
        with watching(self.watch) as opened:
            start = time.perf_counter()
            try:
                self.prepare(splits)
                trial.condensed = self.method.run(task, self.params)
            except (Exception, Interrupted) as exc:  # every error is a finding, reported by the property
                trial.error = exc
            trial.seconds = time.perf_counter() - start
        trial.opened = list(dict.fromkeys(opened))
        return trial


class Kit:
    """The checks on one method: generated data always, real data when present."""

    def __init__(self, name: str, overrides: Mapping[str, Any] | None, workdir: Path, data_root: Path | None,
                 real: bool = True) -> None:
        self.method = get_method(name)
        self.workdir = workdir
        self.overrides = dict(overrides or {})
        self.data_root = data_root
        self.real = real

    def _dataset(self, path: Path) -> Splits:
        return load_dataset(str(path), root=self.workdir / "cache")

    def properties(self) -> list[Outcome]:
        generated = kit_data.make_splits(num_classes=3, size=12, per_class=24)
        path = kit_data.write_generated(self.workdir / "data" / "generated.npz", generated)
        splits = self._dataset(path)
        outcomes = self._all(splits, path, (path,))
        real = self._real_source()
        if real is not None:
            outcomes += self._on_real(real)
        return outcomes

    def _real_source(self) -> Path | None:
        if not self.real or self.data_root is None:
            return None
        path = Path(self.data_root) / f"{REAL_DATASET}.npz"  # the MedMNIST file at 28 px
        return path if path.is_file() else None

    def _outcome(self, name: str, check: Callable[[], str]) -> Outcome:
        if name in self.method.exempt:
            return Outcome(name, "n/a", self.method.exempt[name])
        try:
            return Outcome(name, "pass", check())
        except NotApplicable as exc:
            return Outcome(name, "n/a", str(exc))
        except Fail as exc:
            return Outcome(name, "fail", str(exc))

    def _runner(self, splits: Splits, path: Path, watch: tuple[Path, ...], tag: str) -> Runner:
        workdir = self.workdir / tag
        values = resolve_params(self.method, splits, workdir, self.overrides)
        return Runner(self.method, values, splits, path, workdir, watch)

    def _all(self, splits: Splits, path: Path, watch: tuple[Path, ...]) -> list[Outcome]:
        try:
            runner = self._runner(splits, path, watch, "generated")
        except MedbenchError as exc:
            return [Outcome("output", "fail", f"its conform params are invalid: {exc}")]
        base, again = runner.run(0), runner.run(0)
        results = [self._outcome("search-space", lambda: check_search_space(self.method)),
                   self._outcome("output", lambda: check_output(need(base), splits, self.method))]
        results.append(self._outcome("deterministic", lambda: self._deterministic(base, again)))
        results.append(self._outcome("seed", lambda: self._seed(runner, base)))
        results.append(self._outcome("test-split", lambda: self._test_split(runner, base)))
        results.append(self._outcome("checkpoints", lambda: check_checkpoints(base, self.method, runner.params)))
        results.append(self._outcome("provenance", lambda: check_provenance(need(base), splits)))
        results.append(self._outcome("resume", lambda: self._resume(runner, base)))
        results.append(self._outcome("budget", lambda: self._budget(runner, base, again)))
        results.append(self._outcome("non-finite", lambda: self._non_finite(runner, base)))
        return results

    def _on_real(self, source: Path) -> list[Outcome]:
        path = kit_data.copy_dataset(source, self.workdir / "data" / source.name)
        splits = self._dataset(path)
        try:
            runner = self._runner(splits, path, (path, source), "real")
        except MedbenchError as exc:
            return [Outcome(f"output [{REAL_DATASET}]", "fail", f"its conform params are invalid: {exc}")]
        base = runner.run(0)
        return [self._outcome("output", lambda: check_output(need(base), splits, self.method)).on(REAL_DATASET),
                self._outcome("test-split", lambda: self._test_split(runner, base)).on(REAL_DATASET)]

    # --- the checks that need more runs ---

    @staticmethod
    def _deterministic(base: Trial, again: Trial) -> str:
        second = need(again, "a second run with seed 0")
        diff = differences(need(base), second)
        if diff:
            raise Fail("seed 0 twice gave different sets: " + ", ".join(diff))
        return f"seed 0 twice: bit-identical ({fingerprint(second)[:12]})"

    @staticmethod
    def _seed(runner: Runner, base: Trial) -> str:
        other = need(runner.run(1), "the run with seed 1")
        if not differences(need(base), other):
            raise Fail("seeds 0 and 1 gave the same set (the seed is ignored)")
        return "seeds 0 and 1 give different sets"

    @staticmethod
    def _test_split(runner: Runner, base: Trial) -> str:
        condensed = need(base)
        if base.opened:
            raise Fail(f"opened the dataset file {base.opened[0]} while distilling (tripwire)")
        kit_data.poison_file(runner.path)
        poisoned = dataclasses.replace(runner.splits, test=kit_data.poisoned_test(runner.splits.test))
        trial = runner.run(0, splits=poisoned)
        other = need(trial, "the run with a poisoned test split")
        if trial.opened:
            raise Fail(f"opened the dataset file {trial.opened[0]} while distilling (tripwire)")
        diff = differences(condensed, other)
        if diff:
            raise Fail("the set changed when the test split was replaced by other images: " + ", ".join(diff))
        return "no dataset file opened; bit-identical with the test split replaced by other images"

    @staticmethod
    def _resume(runner: Runner, base: Trial) -> str:
        condensed = need(base)
        if len(base.reports) < 2:
            raise Fail("reported progress fewer than twice (task.report), so it cannot be interrupted midway")
        # Runs are deterministic, so the same progress reports come in the same order: stop at the middle one.
        middle = len(base.reports) // 2
        stop = base.reports[middle]
        calls = iter(range(len(base.reports)))
        folder = runner.workdir / "checkpoints" / "resume"
        first = runner.run(0, checkpoint_dir=folder, interrupt=lambda done, total: next(calls) >= middle)
        if not isinstance(first.error, Interrupted):
            raise Fail(f"the interrupted run ended with {first.describe_error()} instead of the interruption")
        if not folder.is_dir() or not any(folder.rglob("*")):
            raise Fail(f"interrupted at step {stop}, it left nothing in task.checkpoint_dir to resume from")
        second = runner.run(0, checkpoint_dir=folder)
        resumed = need(second, "the resumed run")
        if len(second.reports) >= len(base.reports):
            raise Fail(f"interrupted at step {stop}, it started again from the beginning "
                        f"({len(second.reports)} progress reports, as many as an uninterrupted run)")
        diff = differences(condensed, resumed)
        if diff:
            raise Fail(f"interrupted at step {stop} and resumed, it differs from an uninterrupted run: "
                        + ", ".join(diff))
        return f"interrupted at step {stop} of {base.reports[-1]}, resumed from there: bit-identical"

    @staticmethod
    def _budget(runner: Runner, base: Trial, again: Trial) -> str:
        need(base)
        # The faster of the two unbudgeted runs: a first run pays one-off costs a budget must not absorb.
        warm = min((base, again), key=lambda t: t.checkpoints[-1][1] if t.checkpoints else math.inf)
        timed = [(it, s) for it, s, _ in warm.checkpoints if it > 0]
        if len(timed) < 2:
            raise Fail("recorded fewer than two checkpoints after iteration 0, so its time cannot be checked "
                        "against a budget")
        gap = max(b - a for a, b in itertools.pairwise([0.0, *(s for _, s in timed)]))
        budget = BUDGET_SHARE * timed[-1][1]
        trial = runner.run(0, budget=budget)
        need(trial, f"the run with budget_seconds {budget:.3g}")
        if not trial.checkpoints:
            raise Fail("recorded no checkpoint under a budget")
        last_it, last_s = trial.checkpoints[-1][0], trial.checkpoints[-1][1]
        if last_it >= timed[-1][0]:
            raise Fail(f"ran all {last_it} iterations ({last_s:.3g} s) under a budget of {budget:.3g} s "
                        f"({BUDGET_SHARE:.0%} of its {timed[-1][1]:.3g} s)")
        if last_s > budget + gap:
            raise Fail(f"stopped at {last_s:.3g} s, beyond the budget {budget:.3g} s plus one checkpoint gap "
                        f"({gap:.3g} s)")
        return (f"budget {budget:.3g} s: stopped at iteration {last_it} of {timed[-1][0]} after {last_s:.3g} s "
                f"(allowed {budget + gap:.3g} s)")

    @staticmethod
    def _non_finite(runner: Runner, base: Trial) -> str:
        # Armed at the first progress report (a loss that turns NaN mid-run), or from the start for a
        # method that reports no progress.
        switch = Switch(armed=not base.reports)

        def arm(done: int) -> None:
            switch.armed = True

        trial = runner.run(0, model=ArmedSpec(MODEL.name, MODEL.options, switch), on_report=arm)
        if not switch.fired:
            raise Fail("could not inject a non-finite loss: no network built from task.model ran after the "
                        "first progress report (exempt the property with a reason if the method has no loss)")
        if isinstance(trial.error, CellFailed):
            return f"outputs turned NaN mid-run: the cell fails ({trial.error})"
        if trial.error is not None:
            raise Fail(f"outputs turned NaN mid-run: it raised {trial.describe_error()} instead of "
                        "CellFailed (the harness would stop the whole run)")
        images = trial.condensed.images if trial.condensed is not None else None
        if images is not None and not torch.isfinite(images).all():
            return "outputs turned NaN mid-run: it returned non-finite images, which the harness fails"
        raise Fail("outputs turned NaN mid-run, yet it returned a finite set as done "
                    "(raise medbench.core.errors.CellFailed)")


def conform(method: str, params: Mapping[str, Any] | None = None, *, data_root: Path | str | None = DEFAULT_DATA_ROOT,
            real: bool = True, workdir: Path | None = None) -> list[Outcome]:
    """Check ``method`` (a registered name) against every property; ``params`` override its declared
    tiny settings. Real data is used when ``data_root`` holds BreastMNIST and ``real`` is true."""
    with contextlib.ExitStack() as stack:
        folder = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(_environment(folder))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: extra threads only add spin-waiting
        stack.callback(torch.set_num_threads, threads)
        root = Path(data_root).expanduser() if data_root is not None else None
        return Kit(method, params, folder, root, real).properties()


def assert_conforms(method: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Outcome]:
    """:func:`conform` for a plug-in's pytest: raises AssertionError listing every failed property."""
    outcomes = conform(method, params, **kwargs)
    failed = [o.line() for o in outcomes if o.failed]
    assert not failed, f"{method} fails {len(failed)} conformance propert{'y' if len(failed) == 1 else 'ies'}:\n" + \
        "\n".join(failed)
    return outcomes

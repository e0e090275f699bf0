"""The pretraining corpus: sources, filters, exact and near dedup, decontamination, token shards (datatrove).

Importing the package makes datatrove quiet on stderr: its per-task logging shows errors only (the full task logs
stay in the build's ``logs/`` folder) and its dedup steps draw no progress bars (``corpus build`` names each
stage instead). ``corpus build`` starts every pipeline with ``quiet_logs``, so each worker process imports the
package (and so quiets datatrove) while it loads the pipeline, before its task starts.
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
    import functools

    try:
        import datatrove.executor.base as executor_base
        import datatrove.pipeline.dedup.exact_dedup as exact_dedup
        import datatrove.pipeline.dedup.minhash as minhash
    except ImportError:  # datatrove is a dependency; stay importable while it is being installed
        return
    executor_base.add_task_logger = _task_logger
    executor_base.close_task_logger = _close_task_logger
    for module in (exact_dedup, minhash):
        if hasattr(module, "tqdm"):
            module.tqdm = functools.partial(module.tqdm, disable=True)


def _close_task_logger(logfile) -> None:
    from loguru import logger

    logger.complete()
    logger.remove()
    logger.add(sys.stderr, level="WARNING", colorize=False, format="{message}")
    logfile.close()


def quiet_logs(data, rank: int = 0, world_size: int = 1):
    """A first pipeline step that passes its input on; loading it in a worker imports this package."""
    return data


_quiet_task_logs()

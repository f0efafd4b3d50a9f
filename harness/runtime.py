"""Two things every layer that touches a library needs, written once: quieting the libraries that
narrate (transformers, datasets, lm-eval) and choosing the device a process computes on.

Nothing here imports torch, transformers or datasets at module level: `quiet` touches only the
libraries a process has already imported, or is about to use.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

NARRATORS = ("lm_eval", "transformers", "datasets", "accelerate")


@contextlib.contextmanager
def quiet(level: int = logging.WARNING, loggers: tuple[str, ...] = NARRATORS) -> Iterator[None]:
    """For the block: `loggers` say nothing below `level` (they narrate every step at INFO) and
    transformers and datasets draw no progress bars. Everything comes back afterwards."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(max(logger.getEffectiveLevel(), level))
    with contextlib.ExitStack() as stack:
        for bars in _progress_bars():
            stack.enter_context(bars)
        try:
            yield
        finally:
            for logger, was in saved:
                logger.setLevel(was)


def _progress_bars() -> list:
    """A context per imported library that draws progress bars, turning them off for the block."""
    found = []
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging
        found.append(_bars_off(hf_logging.is_progress_bar_enabled, hf_logging.disable_progress_bar,
                               hf_logging.enable_progress_bar))
    if "datasets" in sys.modules:
        import datasets
        found.append(_bars_off(datasets.is_progress_bar_enabled, datasets.disable_progress_bars,
                               datasets.enable_progress_bars))
    return found


@contextlib.contextmanager
def _bars_off(enabled, disable, enable) -> Iterator[None]:
    was = enabled()
    disable()
    try:
        yield
    finally:
        if was:
            enable()


def device(name: str | None = None):
    """The torch device named, else the GPU where there is one, else the CPU."""
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))

"""``--debug`` logging without importing :mod:`logging` on the normal path (it costs ~10 ms of
a ~150 ms command). Call sites use :func:`debug`; :func:`enable` installs the real logger."""

from __future__ import annotations

from typing import Any, TextIO

_logger: Any = None


def enable(stream: TextIO) -> None:
    global _logger
    import logging

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(asctime)s - %(threadName)s - %(name)s - %(levelname)s - %(message)s")
    )
    logger = logging.getLogger("batchrock.cli")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    _logger = logger


def debug(msg: str, *args: Any, exc_info: bool = False) -> None:
    if _logger is not None:
        _logger.debug(msg, *args, exc_info=exc_info)

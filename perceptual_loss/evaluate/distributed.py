"""The evaluator's processes under ``torchrun``: who scores which batch, and how they agree.

Every collective here exchanges small Python objects (names, sizes, rows, error messages) over a
gloo group, whatever backend the default group uses, with a timeout: a process that dies or hangs
makes the others fail with a clear error after ``timeout`` seconds, never wait forever.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from .pairing import EvaluationError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1800.0
"""Seconds a process waits for the others at a collective (torch.distributed's own default)."""
T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """True when the environment says this process is one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@dataclass
class Shard:
    """This process's place among the evaluator's processes: ``rank`` of ``world``.

    Outside an initialised process group (or in a group of one) it is rank 0 of 1 and every
    collective is the identity.
    """

    rank: int = 0
    world: int = 1
    group: Any = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def current(cls, timeout: float | None = None) -> Shard:
        """This process's shard of the initialised default group, with a gloo group for the exchanges."""
        import torch.distributed as dist

        timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls(timeout=timeout)
        # A group of our own: gloo exchanges Python objects on any machine (NCCL would need each
        # process's GPU set first), and its timeout is ours, not the default group's.
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))
        return cls(dist.get_rank(), dist.get_world_size(), group, timeout)

    @classmethod
    @contextmanager
    def open(cls, timeout: float | None = None) -> Iterator[Shard]:
        """:meth:`current`, whose gloo group is destroyed on exit (no group leaks per call)."""
        shard = cls.current(timeout)
        try:
            yield shard
        finally:
            if shard.group is not None:
                import torch.distributed as dist

                dist.destroy_process_group(shard.group)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This process's items: every ``world``-th from position ``rank`` (no padding, no repeats)."""
        return list(items[self.rank :: self.world])

    def gather(self, value: T, doing: str) -> list[T]:
        """``value`` of every process, in rank order, on every process.

        Raises:
            EvaluationError: another process did not answer within the timeout (it died or
                hangs), while ``doing``.
        """
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(out, value, group=self.group)
        except RuntimeError as error:  # gloo's timeout or a closed connection
            raise EvaluationError(
                f"rank {self.rank}: lost the other evaluator processes while {doing} (no answer within "
                f"{self.timeout:g} s, or a process died: see its log above). Scored pairs are kept in the "
                f"journal; run the same command with --resume to finish. ({type(error).__name__}: {error})"
            ) from error
        return out

    def agree(self, error: BaseException | None, doing: str) -> None:
        """Raise on every process when any process failed while ``doing``; return when none did.

        The failing process re-raises its own exception; the others raise an
        :class:`EvaluationError` that names the failing rank and its message.
        """
        messages = self.gather(None if error is None else f"{type(error).__name__}: {error}", doing)
        if error is not None:
            raise error
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if failed:
            rank, message = failed[0]
            raise EvaluationError(f"rank {rank} failed while {doing}, so every rank stopped: {message}")

    def device(self, device: torch.device) -> torch.device:
        """``cuda`` without an index becomes this process's GPU, ``cuda:LOCAL_RANK``, under torchrun."""
        if self.distributed and device.type == "cuda" and device.index is None:
            local_rank = int(os.environ.get("LOCAL_RANK", self.rank % max(1, torch.cuda.device_count())))
            return torch.device("cuda", local_rank)
        return device

    @property
    def processes_on_this_machine(self) -> int:
        """Evaluator processes sharing this machine's cores (torchrun's ``LOCAL_WORLD_SIZE``)."""
        return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if self.distributed else 1

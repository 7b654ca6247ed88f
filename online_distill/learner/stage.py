"""The learner stage: labeled examples in, student steps, checkpoints, then offset commits.

:meth:`LearnerStage.run_once`, the commit order:

1. poll labeled-example records and take them in (:class:`~online_distill.learner.intake.
   Intake`): a record that does not decode, or that the student cannot take, is
   dead-lettered; a good example held out for the gate, dropped by the critics, empty, or
   already trained is counted and skipped; either way its offset is done. The rest wait;
2. agree with the other workers (``learner.sync``) whether a step happens: when
   ``learner.batch_size`` fresh examples wait, or fewer have waited ``max_wait_s``;
3. train one step on the waiting examples, topped up from the replay buffer and with the
   student's own self-distilled examples; only then are their offsets done;
4. the step's observers see it (audit log, live signals, drift) and a self-distillation
   round is scheduled every ``self_distill_every_steps``;
5. every ``checkpoint_every_steps`` steps write a checkpoint whose ``progress`` holds the
   offsets of the examples *trained on* (never of examples still waiting), flush the
   dead-letter sink, then commit exactly those offsets;
6. every ``publish_every_steps`` steps (or ``publish_every_s`` seconds after the last version)
   hand the student to the publisher, with the offsets
   and prompt times it covers.

A step whose loss or gradient is not finite takes no update and trains nothing: with
non-finite weights the stage raises
:class:`~online_distill.learner.stats.NonFiniteWeights` (fatal: restart from the last
checkpoint); otherwise the examples whose loss alone is not finite are dead-lettered and the
rest are retried with the next step.

With N data-parallel workers (``learner.workers``), each worker runs its own stage over its
share of the partitions and the steps stay in lockstep through ``learner.sync``
(:mod:`online_distill.learner.lockstep`): a step happens only when every worker is ready,
each on exactly ``batch_size`` examples; at a checkpoint, rank 0 saves every worker's
offsets and each worker commits its own after the save. Only rank 0 publishes.

On start, :meth:`resume` loads the latest checkpoint and seeks the source to its offsets,
so the student resumes exactly where its weights are, whatever Kafka had committed.
Examples polled but not yet trained are simply read again after a restart.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from online_distill.config import LearnerConfig
from online_distill.learner.intake import FreshnessPolicy, Intake
from online_distill.learner.lockstep import Readiness
from online_distill.learner.observers import StepObserver
from online_distill.learner.replay import ReplayBuffer
from online_distill.learner.self_distill import SelfDistiller
from online_distill.learner.stats import LearnerStageStats, NonFiniteWeights, prompt_time_metrics
from online_distill.learner.trainer import Learner, StepStats
from online_distill.messages import LabeledExample
from online_distill.streams import DeadLetterWriter, MessageSource, Partition, Record
from online_distill.streams.offsets import OffsetTracker, offsets_from_json, offsets_to_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Publication:
    """What a published version covers: the labels offsets trained up to, and what its
    manifest records (the last loss, how many prompts and when they entered the stream)."""

    offsets: dict[str, int]
    metrics: dict[str, float] = field(default_factory=dict)


Publisher = Callable[[Learner, Publication], None]


class LearnerStage:
    """Consumes labeled examples and trains the student (module docstring: the order)."""

    def __init__(
        self,
        source: MessageSource,
        learner: Learner,
        cfg: LearnerConfig,
        intake: Intake,
        dead_letters: DeadLetterWriter,
        publisher: Publisher | None = None,
        observers: Sequence[StepObserver] = (),
        self_distiller: SelfDistiller | None = None,
        max_wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``intake`` decodes and filters each record (its filter's ``seen`` should be
        :meth:`seen`); ``dead_letters`` is the writer the intake sends to (flushed before
        each commit); ``max_wait_s``: a slow stream still trains, after this long any
        fresh data will do."""
        self.source, self.learner, self.cfg, self.intake = source, learner, cfg, intake
        self.dead_letters, self.publisher, self.observers = dead_letters, publisher, observers
        self.self_distiller, self.max_wait_s, self.clock = self_distiller, max_wait_s, clock
        self.replay = ReplayBuffer(cfg.replay_buffer_size, seed=cfg.seed)
        self.freshness = FreshnessPolicy(cfg.max_lag_s, 4 * cfg.batch_size, wall_clock)
        self.tracker = OffsetTracker()
        self.pending: list[tuple[Record, LabeledExample]] = []
        self._pending_since: float | None = None
        self._published_at = clock()  # the last version (or the start), publish_every_s
        self._seek: dict[Partition, int] = {}
        self.stats = LearnerStageStats()
        self.stop_requested = False
        """Set by the owner to stop; with several workers every worker then stops at the
        same iteration (see :meth:`run_once`)."""
        self.stopped = False
        self.self_examples: list[LabeledExample] = []
        """Student-labeled examples kept by the critics, trained with the next batch."""
        self.trained_ids: list[str] = []
        """Prompt ids trained as fresh data by this instance, in order."""
        self._prompt_times: list[float] = []
        # When each prompt trained since the last publish entered the stream (unix s).

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.cfg.checkpoint_dir)

    def seen(self, prompt_id: str) -> bool:
        """Whether ``prompt_id`` trained recently (replay) or is waiting to train."""
        return self.replay.seen(prompt_id) or any(
            p.prompt_id == prompt_id for _, p in self.pending)

    def resume(self) -> int:
        """Load the latest checkpoint (if any) and seek to its offsets; returns its step."""
        progress = self.learner.load(self.checkpoint_dir)
        if progress:
            self._seek = offsets_from_json(progress.get("offsets", {}))
            log.info("learner: resumed at step %d, offsets %s", self.learner.step, self._seek)
        return self.learner.step

    def run_once(self, poll_timeout_s: float = 0.5) -> StepStats | None:
        """Poll once and take at most one training step; returns its stats or None."""
        if self.cfg.max_steps is not None and self.learner.step >= self.cfg.max_steps:
            time.sleep(poll_timeout_s)  # done training (learner.max_steps): idle, read nothing
            return None
        if self.stopped:
            return None
        # Step 1: poll and take in.
        # Freshness first: read a full batch whatever waits (the policy skips the oldest);
        # otherwise read only what fits.
        room = 4 * self.cfg.batch_size
        if not self.freshness.enabled:
            room = max(1, room - len(self.pending))
        self._take_in(self.source.poll(max_records=room, timeout_s=poll_timeout_s))
        # Step 2: agree whether to step (on every worker: one collective).
        ready, stop = self.learner.sync.agree(self._readiness(), self.stop_requested)
        self.stopped = stop
        if stop or not ready:
            return None
        # Step 3: train; the batch's offsets are done only after the update.
        take, stats = self._train()
        if stats.skipped:
            return self._after_non_finite(take, stats)
        fresh = self._trained(take, stats)
        # Step 4: observers of the finished step; self-distillation's next round.
        for observer in self.observers:
            observer.observe(self.learner.step, fresh, stats)
        self._self_distill(fresh)
        # Step 5: checkpoint, then commit what the checkpoint covers.
        if self.learner.step % self.cfg.checkpoint_every_steps == 0:
            self.checkpoint()
        # Step 6: publish.
        if self.publisher is not None and self._publish_due():
            self.publisher(self.learner, self._publication())
            self.stats.published += 1
            self._published_at = self.clock()
            self._prompt_times = []
        return stats

    def _take_in(self, records: list[Record]) -> None:
        """Step 1: each record waits to train, or is done (dead-lettered, or skipped)."""
        for rec in self._apply_seek(records):
            self.stats.polled += 1
            self.stats.by_topic[rec.topic] += 1
            self.tracker.add(rec)
            ex, dropped = self.intake(rec)
            if ex is not None:
                self.pending.append((rec, ex))
                continue
            if dropped is not None:
                setattr(self.stats, dropped, getattr(self.stats, dropped) + 1)
            self.tracker.done(rec)  # a dead letter: safe once flushed (step 5)
        self._skip_late()
        if self.pending and self._pending_since is None:
            self._pending_since = self.clock()

    def _publish_due(self) -> bool:
        """Every ``publish_every_steps`` steps, or ``publish_every_s`` after the last
        version (or the stage's start)."""
        if self.learner.step % self.cfg.publish_every_steps == 0:
            return True
        every = self.cfg.publish_every_s
        return every > 0 and self.clock() - self._published_at >= every

    def _skip_late(self) -> None:
        """Step 1, freshness first: what the policy skips is done (counted, not trained)."""
        self.pending, skipped = self.freshness.split(self.pending)
        for (rec, _), reason in skipped:
            setattr(self.stats, reason, getattr(self.stats, reason) + 1)
            self.tracker.done(rec)

    def _train(self) -> tuple[list[tuple[Record, LabeledExample]], StepStats]:
        """Step 3: one step on up to ``batch_size`` waiting examples, replay, own examples."""
        size = self.cfg.batch_size
        take = self.pending[:size]
        self.stats.in_step = len(take)  # before they leave pending: a snapshot sees them
        self.pending = self.pending[size:]
        self._pending_since = self.clock() if self.pending else None
        fresh = [ex for _, ex in take]
        extra = self.replay.sample(size - len(fresh), exclude={ex.prompt_id for ex in fresh})
        own, self.self_examples = self.self_examples, []
        stats = self.learner.train_step(fresh + extra + own)
        if stats.skipped:
            self.self_examples = own
        else:
            self.stats.self_distilled += len(own)
        return take, stats

    def _trained(self, take: list[tuple[Record, LabeledExample]], stats: StepStats
                 ) -> list[LabeledExample]:
        """Step 3, after the update: the batch is trained; its offsets are done."""
        for rec, ex in take:
            self.replay.add(ex)
            self.tracker.done(rec)
            self.trained_ids.append(ex.prompt_id)
            self._prompt_times.append(ex.prompt_created_at or ex.created_at)
            self.stats.by_origin[ex.origin] = self.stats.by_origin.get(ex.origin, 0) + 1
        self.stats.fresh_trained += len(take)
        self.stats.in_step = 0
        self.stats.recent_steps.append(stats)
        self.stats.last_step = stats
        self.stats.train_seconds += stats.seconds
        self.stats.trained_tokens += stats.tokens
        return [ex for _, ex in take]

    def _self_distill(self, fresh: list[LabeledExample]) -> None:
        """Step 4: every ``self_distill_every_steps``, the student labels some of the step's
        prompts; the critics' survivors train with the next batch."""
        every = self.cfg.self_distill_every_steps
        if self.self_distiller is not None and every and self.learner.step % every == 0:
            self.self_examples = self.self_distiller.round(
                fresh[: self.cfg.self_distill_prompts], tag=str(self.learner.step))

    def _publication(self) -> Publication:
        """Step 6: what the version covers (the offsets trained, as checkpointed)."""
        last = self.stats.last_step
        metrics = {"loss": last.loss} if last else {}
        metrics.update(prompt_time_metrics(self._prompt_times))
        return Publication(offsets_to_json(self.tracker.committable()), metrics)

    def _after_non_finite(self, take: list[tuple[Record, LabeledExample]], stats: StepStats
                          ) -> StepStats:
        """A step whose loss or gradient was not finite took no update. Broken weights are
        fatal (the learner restarts from its last checkpoint and reads its uncommitted input
        again); otherwise each example's loss alone is checked: the ones not finite alone
        are dead-lettered, the others wait for the next step. Nothing counts as trained."""
        self.stats.non_finite_steps += 1
        self.stats.last_step = stats
        if not self.learner.weights_finite():
            raise NonFiniteWeights(
                f"the student's weights are not finite after step {self.learner.step}; "
                "exiting so that the learner restarts from its last checkpoint (its "
                "uncommitted input is read again). If this repeats, lower learner.lr or "
                "learner.max_grad_norm.")
        keep: list[tuple[Record, LabeledExample]] = []
        for rec, ex in take:
            loss = self.learner.loss_alone(ex)
            if math.isfinite(loss):
                keep.append((rec, ex))
                continue
            self.dead_letters.send(
                rec, f"prompt {ex.prompt_id}: the distillation loss of this example alone is "
                f"{loss} (not finite); check its teacher log-probabilities", "non_finite")
            self.stats.non_finite_dropped += 1
            self.tracker.done(rec)  # safe once the dead letter is flushed (step 4)
        self.pending = keep + self.pending
        self.stats.in_step = 0
        self._pending_since = self.clock() if self.pending else None
        log.warning("learner: step %d had a non-finite loss (%s) or gradient norm (%s); no "
                    "update; %d of %d examples dead-lettered, the rest retried",
                    self.learner.step, stats.loss, stats.grad_norm,
                    len(take) - len(keep), len(take))
        return stats

    def checkpoint(self) -> None:
        """Save a checkpoint holding the trained offsets, then commit them. With several
        workers every worker calls this at the same step: rank 0 saves every worker's
        offsets, and each worker commits its own partitions once the save is done."""
        offsets = self.tracker.committable()
        sync = self.learner.sync
        everyone: dict[str, int] = {}
        for part in sync.gather(offsets_to_json(offsets)):
            everyone.update(part)
        saved = True
        if sync.rank == 0:
            try:
                self.learner.save(self.checkpoint_dir, progress={"offsets": everyone})
            except Exception as exc:  # noqa: BLE001 - a full or failing disk: OSError,
                # torch's RuntimeError, safetensors' SafetensorError all mean "not saved"
                saved = False
                self.stats.checkpoint_failures += 1
                log.error("learner: checkpoint at step %d failed (%r); training goes on and "
                          "its offsets stay uncommitted until a checkpoint succeeds (free "
                          "space in %s)", self.learner.step, exc, self.checkpoint_dir)
        # Every worker learns whether rank 0 saved: the checkpoint is on disk before any
        # worker commits past it (and nobody commits when it is not).
        if sync.sum_counts([int(saved)])[0] < sync.world_size:
            return
        self.stats.checkpoints += 1
        self.dead_letters.sink.flush(30.0)  # dead letters acknowledged before their commit
        if offsets:
            self.source.commit(offsets)

    def _readiness(self) -> Readiness:
        full = len(self.pending) >= self.cfg.batch_size
        # A slow or ending stream: whatever waited max_wait_s trains (topped up from replay).
        waited = self._pending_since is not None and (
            self.clock() - self._pending_since >= self.max_wait_s)
        return Readiness(full=full, waited=waited,
                         can_train=bool(self.pending) or len(self.replay) > 0)

    def _apply_seek(self, records: list[Record]) -> list[Record]:
        """After a resume, move each newly assigned partition to the checkpoint's offset."""
        if not self._seek:
            return records
        assigned = self.source.assignment()
        todo = {p: off for p, off in self._seek.items() if p in assigned}
        if todo:
            self.source.seek(todo)
            for p, off in todo.items():
                self.tracker.reset(p, off)
                del self._seek[p]
        # Records polled before the seek are read again from the checkpoint's offsets.
        return [r for r in records if r.where not in todo]

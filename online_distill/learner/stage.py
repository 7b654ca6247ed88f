"""The learner stage: labeled examples in, student steps, checkpoints, then offset commits.

:meth:`LearnerStage.run_once`:

1. poll labeled-example records; decode them (malformed ones, and "untrainable" ones the
   student cannot take: token ids outside its vocabulary, tokens without a top-k, are
   dead-lettered) and drop prompt ids seen before (at-least-once delivery; counted as
   duplicates), the prompts held out for the evaluation gate
   (:func:`online_distill.gate.holdout.held_out`) and examples without a labeled token;
2. when ``learner.batch_size`` fresh examples wait (or fewer have waited ``max_wait_s``),
   take one step on them, topped up from the replay buffer;
3. every ``checkpoint_every_steps`` steps write a checkpoint whose ``progress`` holds the
   offsets of the examples *trained on* (never of examples still waiting);
4. flush the dead-letter sink, then commit exactly those offsets to Kafka;
5. every ``publish_every_steps`` steps hand the student to the publisher.

A step whose loss or gradient is not finite takes no update and trains nothing: with
non-finite weights the stage raises
:class:`~online_distill.learner.stats.NonFiniteWeights` (fatal: restart from the last
checkpoint); otherwise the examples whose loss alone is not finite are dead-lettered and the
rest are retried with the next step.

With N data-parallel workers (``learner.workers``), each worker runs its own stage over its
share of the partitions and the steps stay in lockstep through ``learner.sync``
(:mod:`online_distill.learner.lockstep`): a step happens only when every worker is ready, each
on exactly ``batch_size`` examples; at a checkpoint, rank 0 saves every worker's offsets and
each worker commits its own after the save. Only rank 0 publishes.

On start, :meth:`resume` loads the latest checkpoint and seeks the source to its offsets,
so the student resumes exactly where its weights are, whatever Kafka had committed.
Examples polled but not yet trained are simply read again after a restart.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from online_distill.config import LearnerConfig
from online_distill.gate.holdout import held_out
from online_distill.learner.drift import DriftMonitor
from online_distill.learner.drift_reference import ReferenceEnergy
from online_distill.learner.lockstep import Readiness
from online_distill.learner.replay import ReplayBuffer
from online_distill.learner.self_distill import SelfDistiller
from online_distill.learner.stats import LearnerStageStats, NonFiniteWeights
from online_distill.learner.trainer import Learner, StepStats
from online_distill.messages import LabeledExample
from online_distill.streams import (
    DeadLetterWriter,
    MessageSink,
    MessageSource,
    Partition,
    Record,
    decode_or_dead_letter,
)
from online_distill.streams.offsets import OffsetTracker, offsets_from_json, offsets_to_json

log = logging.getLogger(__name__)

Publisher = Callable[[Learner], None]


class LearnerStage:
    """Consumes labeled examples and trains the student (module docstring: the order)."""

    def __init__(
        self,
        source: MessageSource,
        learner: Learner,
        cfg: LearnerConfig,
        dead_letters: DeadLetterWriter,
        dead_letter_sink: MessageSink,
        publisher: Publisher | None = None,
        max_message_bytes: int = 1 << 20,
        max_wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        audit_path: str | Path | None = None,
        holdout_share: float = 0.0,
        critic: Callable[[LabeledExample], LabeledExample | None] | None = None,
        self_distiller: SelfDistiller | None = None,
        drift: DriftMonitor | None = None,
        reference_energy: ReferenceEnergy | None = None,
    ) -> None:
        self.source, self.learner, self.cfg = source, learner, cfg
        self.dead_letters, self.dl_sink = dead_letters, dead_letter_sink
        self.publisher = publisher
        self.max_message_bytes = max_message_bytes
        # A slow stream still trains: after this long, any fresh data will do.
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.replay = ReplayBuffer(cfg.replay_buffer_size, seed=cfg.seed)
        self.tracker = OffsetTracker()
        self.pending: list[tuple[Record, LabeledExample]] = []
        self._pending_since: float | None = None
        self._seek: dict[Partition, int] = {}
        self.stats = LearnerStageStats()
        self.stop_requested = False
        """Set by the owner to stop; with several workers every worker then stops at the
        same iteration (see :meth:`run_once`)."""
        self.stopped = False
        self.holdout_share = holdout_share
        self.critic, self.self_distiller = critic, self_distiller
        self.drift = drift
        self.reference_energy = reference_energy
        """Scores the drift monitor's energies under a frozen student (None: the training
        forward's energies, which also move as the student learns)."""
        self.self_examples: list[LabeledExample] = []
        """Student-labeled examples kept by the critics, trained with the next batch."""
        self.trained_ids: list[str] = []
        """Prompt ids trained as fresh data by this instance, in order."""
        self.prompt_times: list[float] = []
        """When each prompt trained since the last publish entered the stream (unix s)."""
        # The audit log survives restarts: one line "<step> <prompt id>" per fresh example,
        # so an operator (or a test) can tell which prompts trained which step.
        self._audit = open(audit_path, "a") if audit_path else None  # noqa: SIM115

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.cfg.checkpoint_dir)

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
        # Step 1: poll, decode, de-duplicate.
        room = max(1, 4 * self.cfg.batch_size - len(self.pending))
        for rec in self._apply_seek(self.source.poll(max_records=room, timeout_s=poll_timeout_s)):
            self.stats.polled += 1
            self.stats.by_topic[rec.topic] += 1
            self.tracker.add(rec)
            ex = decode_or_dead_letter(rec, LabeledExample, self.dead_letters,
                                       self.max_message_bytes)
            if ex is not None and (why := self._untrainable(ex)) is not None:
                self.dead_letters.send(rec, why, "untrainable")
                ex = None
            if ex is None:
                self.tracker.done(rec)  # safe once the dead letter is flushed (step 4)
            elif held_out(ex.prompt_id, self.holdout_share):
                self.stats.held_out += 1  # the gate's probe: never trained on
                self.tracker.done(rec)
            elif self.critic is not None and (ex := self.critic(ex)) is None:
                self.stats.critic_dropped += 1  # counted by reason in the critics' stats
                self.tracker.done(rec)
            elif ex.num_labeled_tokens == 0:
                self.stats.empty += 1  # a step needs at least one labeled token
                self.tracker.done(rec)
            elif self.replay.seen(ex.prompt_id) or any(
                    p.prompt_id == ex.prompt_id for _, p in self.pending):
                self.stats.duplicates += 1
                self.tracker.done(rec)
            else:
                self.pending.append((rec, ex))
        if self.pending and self._pending_since is None:
            self._pending_since = self.clock()
        # Step 2: train when a batch is ready (on every worker: one collective).
        ready, stop = self.learner.sync.agree(self._readiness(), self.stop_requested)
        if stop:
            self.stopped = True
            return None
        if not ready:
            return None
        take, self.pending = self.pending[: self.cfg.batch_size], self.pending[
            self.cfg.batch_size :]
        self._pending_since = self.clock() if self.pending else None
        fresh = [ex for _, ex in take]
        extra = self.replay.sample(self.cfg.batch_size - len(fresh),
                                   exclude={ex.prompt_id for ex in fresh})
        own, self.self_examples = self.self_examples, []
        stats = self.learner.train_step(fresh + extra + own)
        if stats.skipped:
            self.self_examples = own
            return self._after_non_finite(take, stats)
        self.stats.self_distilled += len(own)
        for rec, ex in take:
            self.replay.add(ex)
            self.tracker.done(rec)
            self.trained_ids.append(ex.prompt_id)
            self.prompt_times.append(ex.prompt_created_at or ex.created_at)
            self.stats.by_origin[ex.origin] = self.stats.by_origin.get(ex.origin, 0) + 1
        if self._audit is not None:
            self._audit.write("".join(f"{self.learner.step} {ex.prompt_id}\n" for ex in fresh))
            self._audit.flush()
        self.stats.fresh_trained += len(take)
        self.stats.recent_steps.append(stats)
        self._observe_live(fresh, stats)
        every = self.cfg.self_distill_every_steps
        if self.self_distiller is not None and every and self.learner.step % every == 0:
            self.self_examples = self.self_distiller.round(
                fresh[: self.cfg.self_distill_prompts], tag=str(self.learner.step))
        self.stats.last_step = stats
        self.stats.train_seconds += stats.seconds
        self.stats.trained_tokens += stats.tokens
        # Steps 3-4: checkpoint, then commit what the checkpoint covers.
        if self.learner.step % self.cfg.checkpoint_every_steps == 0:
            self.checkpoint()
        # Step 5: publish.
        if self.publisher is not None and self.learner.step % self.cfg.publish_every_steps == 0:
            self.publisher(self.learner)
            self.stats.published += 1
            self.prompt_times = []
        return stats

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
        self._pending_since = self.clock() if self.pending else None
        log.warning("learner: step %d had a non-finite loss (%s) or gradient norm (%s); no "
                    "update; %d of %d examples dead-lettered, the rest retried",
                    self.learner.step, stats.loss, stats.grad_norm,
                    len(take) - len(keep), len(take))
        return stats

    def _untrainable(self, ex: LabeledExample) -> str | None:
        """Why the student cannot take `ex`, or None: a token id outside its vocabulary
        (labels made with another tokenizer) would fail the forward, and tokens without a
        top-k (k = 0) leave nothing to distil (the loss needs k >= 1 in the whole batch)."""
        vocab = int(self.learner.model.get_input_embeddings().num_embeddings)
        fields: list[tuple[str, Sequence[int]]] = [("prompt_token_ids", ex.prompt_token_ids)]
        for i, pt in enumerate(ex.pseudo_targets):
            if pt.num_tokens and not pt.k:
                return (f"pseudo_targets[{i}] has {pt.num_tokens} tokens but no top-k "
                        "log-probabilities (k = 0); label with teacher.top_k_logprobs >= 1")
            topk = [t for row in pt.topk_ids for t in row]
            fields += [(f"pseudo_targets[{i}].token_ids", pt.token_ids),
                       (f"pseudo_targets[{i}].topk_ids", topk)]
        for name, ids in fields:
            top = max(ids, default=-1)
            if top >= vocab:
                return (f"{name} holds token id {top}, outside the student's vocabulary of "
                        f"{vocab}; the teacher must label with the student's tokenizer")
        return None

    def _observe_live(self, fresh: list[LabeledExample], stats: StepStats) -> None:
        """Record the live-traffic signals of the step's fresh traffic examples (the first
        ``len(fresh)`` of the step) and feed the drift monitor."""
        sig = stats.signals
        if sig is None:
            return
        live = [(i, j) for j, i in enumerate(sig.examples)
                if i < len(fresh) and fresh[i].origin == "traffic"]
        if not live:
            return
        for _, j in live:
            self.stats.recent_live.append((sig.kl[j], sig.jsd[j], sig.agreement[j],
                                           sig.energy[j]))
        self.stats.last_live = {
            "kl": sum(sig.kl[j] for _, j in live) / len(live),
            "agreement": sum(sig.agreement[j] for _, j in live) / len(live)}
        if self.drift is not None:
            prompts = [fresh[i].prompt_token_ids for i, _ in live]
            energy = [sig.energy[j] for _, j in live]
            if self.reference_energy is not None:
                energy, renewed = self.reference_energy.score(
                    self.learner.model, prompts, may_renew=not self.drift.detected()["energy"])
                if renewed:
                    self.drift.energy.reset()
            self.drift.observe(energy=energy, length=[len(p) for p in prompts],
                               tokens=prompts, divergence=[sig.kl[j] for _, j in live])

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
        self.dl_sink.flush(30.0)  # dead letters acknowledged before their offsets commit
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

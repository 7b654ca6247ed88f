"""The OOD-feedback logic (energy, window, tails, noise, formats, budget) and its stage, on
hand-computed values, the in-memory broker fakes and fake generator/scorer callables."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from online_distill.config import Config, ConfigError, DemoConfig, OODConfig
from online_distill.messages import DeadLetter, PromptMessage, decode, encode
from online_distill.models.scores import aggregate, prompt_energies, token_energies
from online_distill.ood import (
    ArithmeticFeedback,
    EnergyWindow,
    FeedbackBudget,
    LineFeedback,
    NoiseFilter,
    TailExample,
    TailSet,
    feedback_format,
)
from online_distill.ood.stage import OODStage
from online_distill.streams import DeadLetterWriter, MemoryLog, MemorySink, MemorySource
from online_distill.tasks.arithmetic import Problem, parse_prompt

PROMPTS, FEEDBACK, DLQ = "prompts", "feedback", "dead"


# --------------------------------------------------------------------------- energy
def test_token_energies_match_hand_computed_values() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # (1, 2, 2)
    e1 = token_energies(logits, 1.0)
    assert e1.shape == (1, 2)
    assert torch.allclose(e1, torch.tensor([[-math.log(2.0), -math.log(4.0)]]))
    e2 = token_energies(logits, 2.0)  # -2 * log(exp(0) + exp(ln3 / 2)) = -2 log(1 + sqrt 3)
    assert e2[0, 1].item() == pytest.approx(-2.0 * math.log(1.0 + math.sqrt(3.0)))
    assert e2[0, 0].item() == pytest.approx(-2.0 * math.log(2.0))
    with pytest.raises(ValueError):
        token_energies(logits, 0.0)


def test_aggregate_is_masked_and_never_nan() -> None:
    energies = torch.tensor([[1.0, 5.0, 3.0, 99.0], [2.0, 4.0, 99.0, 99.0],
                             [99.0, 7.0, 1.0, 99.0], [9.0, 9.0, 9.0, 9.0]])  # (4, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])  # (4, 4)
    assert aggregate(energies, mask, "mean").tolist() == [3.0, 3.0, 4.0, 0.0]
    assert aggregate(energies, mask, "max").tolist() == [5.0, 4.0, 7.0, 0.0]
    assert aggregate(energies, mask, "last").tolist() == [3.0, 4.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        aggregate(energies, mask[:, :3], "mean")
    with pytest.raises(ValueError):
        aggregate(energies, mask, "sum")  # type: ignore[arg-type]


class TableLM(torch.nn.Module):
    """A 'language model' whose logits at a position depend only on that position's token."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)  # (V, V)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        assert not self.training
        return type("Out", (), {"logits": self.table[input_ids]})()  # (B, L, V)


def test_prompt_energies_against_a_table_model() -> None:
    torch.manual_seed(0)
    table = torch.randn(6, 6)  # (V, V)
    per_token = (-torch.logsumexp(table, -1)).tolist()  # (V,) energy after each token
    model = TableLM(table)
    model.train()
    seqs = [[1, 2, 3], [4], [5, 5], [1, 2, 3, 4, 5]]
    for how, agg in (("mean", lambda s: sum(s) / len(s)), ("max", max), ("last", lambda s: s[-1])):
        got = prompt_energies(model, seqs, pad_id=0, how=how, batch_size=3)  # type: ignore[arg-type]
        want = [agg([per_token[t] for t in s]) for s in seqs]
        assert got == pytest.approx(want, abs=1e-5)
    assert model.training  # restored


def test_prompt_energies_ignore_right_padding_in_a_real_gpt2() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=16, n_embd=16, n_layer=1,
                                       n_head=2, bos_token_id=1, eos_token_id=2,
                                       pad_token_id=0))  # train mode: dropout is on
    seqs = [[1, 5, 6, 7, 8, 9], [1, 3], [1, 4, 4, 4]]
    batched = prompt_energies(model, seqs, pad_id=0, temperature=0.5, how="mean")
    alone = [prompt_energies(model, [s], pad_id=0, temperature=0.5, how="mean")[0] for s in seqs]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert model.training  # restored after scoring in eval mode
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.tensor([seqs[1]])).logits  # (1, 2, V)
    want = (-0.5 * torch.logsumexp(logits / 0.5, -1)).mean().item()
    assert batched[1] == pytest.approx(want, abs=1e-5)


# --------------------------------------------------------------------------- window
def test_window_quantiles_of_a_known_distribution() -> None:
    values = list(range(1000))
    random.Random(0).shuffle(values)
    window = EnergyWindow(1000)
    window.add(values)
    assert len(window) == 1000
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert window.quantile(q) == pytest.approx(float(np.quantile(values, q)))
    assert window.quantile(0.95) == pytest.approx(949.05)
    assert window.mean() == pytest.approx(499.5)
    assert window.std() == pytest.approx(float(np.std(values)))
    assert window.zscore(499.5 + 2 * window.std()) == pytest.approx(2.0)


def test_window_slides_and_evicts_the_oldest() -> None:
    values = list(range(1000))
    random.Random(1).shuffle(values)
    window = EnergyWindow(100)
    for start in range(0, 1000, 37):
        window.add(values[start : start + 37])
    last = values[-100:]
    assert len(window) == 100
    assert window.quantile(0.9) == pytest.approx(float(np.quantile(last, 0.9)))
    assert window.mean() == pytest.approx(float(np.mean(last)))
    assert window.std() == pytest.approx(float(np.std(last)))
    with pytest.raises(ValueError):
        window.add([float("nan")])
    flat = EnergyWindow(10)
    flat.add([2.0, 2.0])
    assert (flat.zscore(2.0), flat.zscore(3.0), flat.zscore(1.0)) == (0.0, math.inf, -math.inf)
    with pytest.raises(ValueError):
        EnergyWindow(5).quantile(0.5)


# --------------------------------------------------------------------------- tails
def test_tail_selection_picks_the_top_quantile() -> None:
    values = list(range(1000))
    random.Random(2).shuffle(values)
    window = EnergyWindow(1000)
    window.add(values)
    threshold = window.quantile(0.95)
    tails = TailSet(capacity=1000)
    for v in values:
        if v > threshold:
            tails.offer(TailExample(f"p{v}", float(v), id=f"id{v}"))
    assert sorted(int(e.energy) for e in tails.examples()) == list(range(950, 1000))


def test_tail_set_keeps_the_latest_distinct_texts() -> None:
    tails = TailSet(capacity=3)
    for i in range(5):
        tails.offer(TailExample(f"t{i}", float(i)))
    tails.offer(TailExample("t2", 9.0))  # a repeat refreshes, it does not duplicate
    assert [(e.text, e.energy) for e in tails.examples()] == [("t3", 3.0), ("t4", 4.0),
                                                              ("t2", 9.0)]


def test_pick_shares_one_kind_chosen_by_its_count() -> None:
    tails = TailSet(capacity=100)
    for i in range(30):
        tails.offer(TailExample(f"a{i}", 1.0, kind="a"))
    for i in range(10):
        tails.offer(TailExample(f"b{i}", 1.0, kind="b"))
    tails.offer(TailExample("c0", 1.0, kind="c"))
    rng = random.Random(0)
    kinds: Counter[str] = Counter()
    for _ in range(4100):
        picked = tails.pick(4, rng)
        assert len({e.kind for e in picked}) == 1 and len({e.text for e in picked}) == len(picked)
        kinds[picked[0].kind] += 1
        assert len(picked) == (1 if picked[0].kind == "c" else 4)  # c has only one entry
    assert kinds["a"] == pytest.approx(3000, abs=150)
    assert kinds["b"] == pytest.approx(1000, abs=100)
    assert kinds["c"] == pytest.approx(100, abs=40)
    unkinded = TailSet(capacity=10)
    for i in range(6):
        unkinded.offer(TailExample(f"x{i}", 1.0))
    assert len(unkinded.pick(4, rng)) == 4 and TailSet(3).pick(4, rng) == []


def test_noise_filter_drops_outliers_and_keeps_the_bulk() -> None:
    rng = random.Random(3)
    window = EnergyWindow(2000)
    window.add(rng.gauss(5.0, 1.0) for _ in range(2000))
    noise = NoiseFilter(4.0)
    bulk = [rng.gauss(5.0, 1.0) for _ in range(1000)]
    outliers = [5.0 + 10.0 * window.std() + rng.random() for _ in range(20)]
    assert all(noise.keep(e, window) for e in bulk)
    assert not any(noise.keep(e, window) for e in outliers)
    assert (noise.kept, noise.dropped) == (1000, 20)
    assert NoiseFilter(4.0).keep(1e9, EnergyWindow(10))  # no bulk yet: keep


# --------------------------------------------------------------------------- formats
def test_arithmetic_feedback_renders_answers_and_parses_the_first_line() -> None:
    fmt = ArithmeticFeedback()
    assert fmt.few_shot(["47+38=", "not a problem", "7*12="]) == "47+38=58\n7*12=48\n"
    assert fmt.parse("3*45=531\n9*9") == ("3*45=", "mul")
    assert fmt.parse("50-7=99\n") == ("50-7=", "sub2")  # a wrong answer: the prompt is fine
    for bad in ("hello", "7-50=3", "3*45=", "\n3*45=531", "1234+5=9", ""):
        assert fmt.parse(bad) is None, bad


def test_line_feedback_is_one_prompt_per_line() -> None:
    fmt = LineFeedback(max_chars=20)
    assert fmt.few_shot(["Translate: hi", "two\nlines", "   "]) == "Translate: hi\ntwo lines\n"
    assert fmt.parse("\n  Summarize: x  \nmore") == ("Summarize: x", "")
    assert fmt.parse("x" * 21) is None and fmt.parse(" \n \n") is None
    assert isinstance(feedback_format(Config()), ArithmeticFeedback)
    assert isinstance(feedback_format(Config(demo=DemoConfig(enabled=False))), LineFeedback)


def test_the_demo_teacher_continues_few_shot_tails_with_their_kind() -> None:
    from online_distill.models.loader import load_model
    from online_distill.tasks.evaluate import complete
    from online_distill.tasks.models import DEMO_TEACHER_DIR

    model, tokenizer = load_model(DEMO_TEACHER_DIR)
    fmt, rng = ArithmeticFeedback(), random.Random(0)
    texts = [fmt.few_shot([Problem("mul", rng.randint(2, 9), rng.randint(10, 99)).prompt
                           for _ in range(4)]) for _ in range(40)]
    outs = complete(model, tokenizer, texts, max_new_tokens=12, temperature=1.0, seed=0)
    kinds = [parsed[1] if (parsed := fmt.parse(o)) else None for o in outs]
    assert kinds.count("mul") >= 28, kinds  # the teacher writes ~89% same-kind lines


# --------------------------------------------------------------------------- budget
def test_budget_allowance_keeps_the_share_under_the_cap() -> None:
    budget = FeedbackBudget(0.2)
    assert budget.allowance() == 0
    budget.saw_traffic(80)
    assert budget.allowance() == 20  # 20 / 100 = 0.2 exactly
    budget.sent_feedback(20)
    assert budget.allowance() == 0 and budget.share() == pytest.approx(0.2)
    budget.saw_traffic(4)
    assert budget.allowance() == 1
    rng = random.Random(4)
    for _ in range(500):
        cap = rng.choice([0.0, 0.05, 0.1, 0.2, 1 / 3, 0.5, 0.9])
        b = FeedbackBudget(cap)
        b.saw_traffic(rng.randint(0, 5000))
        b.sent_feedback(rng.randint(0, 300))
        x, t, f = b.allowance(), b.traffic, b.feedback
        if x:
            assert (f + x) / (t + f + x) <= cap + 1e-12
        assert (f + x + 1) / (t + f + x + 1) > cap
    assert FeedbackBudget(1.0).allowance() > 10**9
    with pytest.raises(ValueError):
        FeedbackBudget(1.5)


def test_new_config_fields_are_range_checked() -> None:
    for field, value in (("min_window", 0), ("tail_capacity", 0), ("feedback_per_round", 0),
                         ("generations_per_prompt", 65)):
        with pytest.raises(ConfigError, match=field):
            OODConfig(**{field: value})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the stage
def energy_of(text: str) -> float:
    """Fake student: add2 prompts have energy in [0, 1), mul in [2, 3); 'noise' 100."""
    problem = parse_prompt(text)
    jitter = random.Random(text).random()
    if problem is None:
        return 100.0
    if problem.kind == "mul" and problem.a == 9 and problem.b == 99:
        return 100.0  # this one mul is the injected noise
    return jitter + (2.0 if problem.kind == "mul" else 0.0)


class FakeTeacher:
    """Continues a few-shot text like the demo teacher: a new line of the last line's kind
    90% of the time, else an add2 line; ``script`` overrides the continuations."""

    def __init__(self, seed: int = 0, script: list[str] | None = None) -> None:
        self.rng, self.script = random.Random(seed), script
        self.calls: list[tuple[list[str], int]] = []

    def __call__(self, texts: list[str], n: int) -> list[str]:
        self.calls.append((texts, n))
        if self.script is not None:
            return list(self.script)
        out = []
        for text in texts:
            kind = parse_prompt(text.splitlines()[-1].split("=")[0] + "=").kind  # type: ignore[union-attr]
            for _ in range(n):
                k = kind if self.rng.random() < 0.9 else "add2"
                a, b = (self.rng.randint(2, 8), self.rng.randint(10, 99)) if k == "mul" else (
                    self.rng.randint(0, 99), self.rng.randint(0, 99))
                out.append(Problem(k, a, b).line + "junk")
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def traffic(log: MemoryLog, n: int, rare_every: int = 100, seed: int = 0) -> list[PromptMessage]:
    """n traffic prompts, every ``rare_every``-th one a mul (1%), the rest add2."""
    rng, out = random.Random(seed), []
    for i in range(n):
        if i % rare_every == rare_every - 1:
            problem = Problem("mul", rng.randint(2, 8), rng.randint(10, 99))
        else:
            problem = Problem("add2", rng.randint(0, 99), rng.randint(0, 99))
        msg = PromptMessage(text=problem.prompt, kind=problem.kind)
        log.append(PROMPTS, encode(msg), key=msg.id.encode())
        out.append(msg)
    return out


def make_stage(log: MemoryLog, generator: Callable[[list[str], int], list[str]],
               clock: Clock, scored: list[str] | None = None, **cfg: object) -> OODStage:
    sink = MemorySink(log)
    settings: dict[str, object] = {"window_size": 1000, "min_window": 200,
                                   "tail_quantile": 0.99, "noise_rejection_zscore": 8.0,
                                   "feedback_interval_s": 5.0, "feedback_per_round": 4,
                                   "generations_per_prompt": 4, **cfg}

    def scorer(texts: list[str]) -> list[float]:
        if scored is not None:
            scored.extend(texts)
        return [energy_of(t) for t in texts]

    return OODStage(MemorySource(log, [PROMPTS], group="ood", max_poll_records=100), sink,
                    generator, scorer, ArithmeticFeedback(), OODConfig(**settings),  # type: ignore[arg-type]
                    FEEDBACK, DeadLetterWriter(sink, DLQ, "ood"), clock=clock, seed=0)


def feedback_messages(log: MemoryLog) -> list[PromptMessage]:
    return [decode(r.value, PromptMessage) for r in log.records(FEEDBACK)]


def run(stage: OODStage, clock: Clock, step_s: float = 1.0) -> None:
    while stage.run_once():
        clock.now += step_s


def test_rare_high_energy_kind_fills_the_tail_and_steers_feedback() -> None:
    log, clock = MemoryLog(partitions=1), Clock()  # one partition: a deterministic order
    sent = traffic(log, 4000)
    stage = make_stage(log, FakeTeacher(), clock, min_window=500)
    run(stage, clock)
    s = stage.stats
    assert s.scored == 4000 and s.polled == 4000
    # The top 1% is mul; a few add2 slip in while the window holds only a few mul.
    assert s.tail_by_kind["mul"] / s.tail_size >= 0.9, s.tail_by_kind
    assert 0.005 <= s.tail_share <= 0.02
    assert s.threshold is not None and 0.9 < s.threshold < 2.5
    fb = feedback_messages(log)
    assert s.rounds >= 5 and len(fb) == s.kept > 0
    kinds = Counter(m.kind for m in fb)
    assert kinds["mul"] / len(fb) >= 0.8, kinds  # 1% of traffic, most of the feedback
    by_id = {m.id: m for m in sent}
    for m in fb:
        assert m.origin == "feedback" and m.energy == pytest.approx(energy_of(m.text))
        assert 1 <= len(m.parent_ids) <= 4 and len(m.parent_energies) == len(m.parent_ids)
        parents = [by_id[p] for p in m.parent_ids]
        assert all(p.kind == "mul" for p in parents) or all(p.kind == "add2" for p in parents)
        assert m.parent_energies == pytest.approx([energy_of(p.text) for p in parents])
    assert sum(log.committed["ood"].values()) == 4000


def test_budget_caps_the_feedback_share() -> None:
    log, clock = MemoryLog(partitions=1), Clock()
    traffic(log, 3000, rare_every=10)
    stage = make_stage(log, FakeTeacher(), clock, feedback_share_cap=0.05,
                       feedback_per_round=16, generations_per_prompt=8, tail_capacity=1000)
    run(stage, clock, step_s=5.0)  # a round after every poll: the cap is what binds
    s = stage.stats
    share = s.kept / (s.kept + 3000)
    assert share <= 0.05 and share >= 0.04, (s.kept, s.dropped)
    assert s.dropped["over_budget"] > 0
    assert stage.budget.allowance() < 16 * 8


def test_invalid_duplicate_noisy_and_over_budget_generations_are_dropped() -> None:
    log, clock = MemoryLog(partitions=1), Clock()
    sent = traffic(log, 300, rare_every=10)  # 30 mul prompts, the top ones become tails
    script = (["not arithmetic", "7-50=3\n"]  # invalid x2
              + [sent[9].text + "1\n", "7*12=48\n", "7*12=48\n"]  # traffic dup, new, its dup
              + ["9*99=198\n"]  # noise (energy 100)
              + [f"{a}*{b}=0\n" for a, b in ((2, 10), (3, 11), (4, 12), (5, 13), (6, 14),
                                             (7, 15), (8, 16), (8, 17), (8, 18), (8, 19))])
    generator = FakeTeacher(script=script)
    stage = make_stage(log, generator, clock, min_window=50, feedback_per_round=2,
                       generations_per_prompt=8, feedback_share_cap=0.03,
                       noise_rejection_zscore=4.0)
    clock.now = -1.0  # the first poll is scored before any round
    while stage.run_once():
        clock.now = -1.0
    clock.now = 0.0
    assert stage.stats.tail_size > 0 and stage.budget.allowance() == 9  # 3% of 300 -> 9
    assert stage.run_once() == 0
    s = stage.stats
    assert s.rounds == 1 and s.generated == 16
    assert s.dropped == {"invalid": 2, "duplicate": 2, "noise": 1, "over_budget": 2}
    snap = s.snapshot(student_version=3)
    assert snap.dropped == s.dropped and snap.dropped is not s.dropped  # a copy
    assert snap.tail_share == s.tail_share and snap.kept == s.kept
    assert snap.student_version == 3
    fb = feedback_messages(log)
    assert s.kept == len(fb) == 9
    assert [m.text for m in fb] == ["7*12="] + [f"{a}*{b}=" for a, b in (
        (2, 10), (3, 11), (4, 12), (5, 13), (6, 14), (7, 15), (8, 16), (8, 17))]
    assert all(m.kind == "mul" for m in fb)
    texts, n = generator.calls[0]
    assert n == 8 and len(texts) == 2 and all(len(t.splitlines()) == 4 for t in texts)
    assert stage.run_once() == 0 and s.rounds == 1  # the interval has not passed
    clock.now = 5.0
    stage.run_once()
    assert s.rounds == 1  # 9 feedback for 300 traffic: no allowance left, no round


def test_dead_letters_commits_feedback_inputs_and_generator_failures() -> None:
    log, clock = MemoryLog(partitions=1), Clock()
    good = traffic(log, 250, rare_every=10)
    log.append(PROMPTS, b"\x00garbage")
    echo = PromptMessage(text="2*33=", origin="feedback", kind="mul", parent_ids=("x",))
    log.append(PROMPTS, encode(echo))
    good += traffic(log, 50, rare_every=10, seed=1)
    scored: list[str] = []

    def broken(texts: list[str], n: int) -> list[str]:
        raise TimeoutError("teacher server timed out")

    stage = make_stage(log, broken, clock, scored=scored, min_window=50)
    run(stage, clock)
    s = stage.stats
    assert s.polled == 302 and s.scored == 300 and s.ignored_feedback == 1
    assert scored == [m.text for m in good]  # the feedback prompt is never scored
    assert sum(log.committed["ood"].values()) == 302
    letters = [decode(r.value, DeadLetter) for r in log.records(DLQ)]
    assert [(d.error_type, d.offset, d.stage) for d in letters] == [("bad_magic", 250, "ood")]
    assert s.dead_lettered == 1
    assert s.failed_rounds >= 1 and s.rounds == 0 and log.records(FEEDBACK) == []
    assert not stage.dedup.add("2*33=")  # remembered for de-duplication


def test_noise_is_measured_from_the_tail_examples_a_prompt_imitates() -> None:
    window = EnergyWindow(1000)
    window.add([float(i % 10) / 10 for i in range(1000)])  # bulk: mean 0.45, std ~0.29
    noise = NoiseFilter(4.0)
    tail_like = 3.0  # ~9 stds above the bulk, but next to its parents
    assert not noise.keep(tail_like, window)  # against the bulk it would be noise
    assert noise.keep(tail_like, window, parents=[2.8, 2.9])
    assert not noise.keep(100.0, window, parents=[2.8, 2.9])  # gibberish is still noise
    assert (noise.kept, noise.dropped) == (1, 2)


def test_nll_and_nll_gap_scores() -> None:
    from online_distill.models.scores import prompt_nll, prompt_scores
    from tests.unit.test_learner import tiny_model

    student, teacher = tiny_model(1), tiny_model(2)
    seqs = [[1, 5, 6, 7], [1, 8]]
    with torch.no_grad():
        logp = torch.log_softmax(student(torch.tensor([seqs[0]])).logits[0, :-1], -1)
        manual = -logp.gather(-1, torch.tensor(seqs[0][1:])[:, None]).mean().item()
    assert prompt_nll(student, seqs, 0)[0] == pytest.approx(manual, rel=1e-5)
    same = prompt_scores(student, seqs, 0, "nll_gap", 1.0, "mean", teacher=student)
    assert same == pytest.approx([0.0, 0.0], abs=1e-6)
    gap = prompt_scores(student, seqs, 0, "nll_gap", 1.0, "mean", teacher=teacher)
    expected = [a - b for a, b in zip(prompt_nll(student, seqs, 0), prompt_nll(teacher, seqs, 0),
                                      strict=True)]
    assert gap == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="needs the teacher"):
        prompt_scores(student, seqs, 0, "nll_gap", 1.0, "mean")

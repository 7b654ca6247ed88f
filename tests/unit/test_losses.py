"""Identities of the distillation losses (STYLE.md habit 2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from online_distill.losses import (
    DIVERGENCES,
    divergence,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    sequence_ce,
    sparse_divergence,
    sparse_from_logits,
    tvd,
)

B, T, V = 3, 5, 11


def _inputs(seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(B, T, V, generator=g) * scale).requires_grad_(True)
    teacher = torch.randn(B, T, V, generator=g) * scale
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0, 0] = True
    return student, teacher, mask


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_identical_inputs_give_zero(kind) -> None:
    s, _, mask = _inputs()
    assert divergence(kind, s, s.detach().clone(), mask).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_divergences_are_positive_on_different_inputs(kind) -> None:
    s, t, mask = _inputs()
    assert divergence(kind, s, t, mask).item() > 1e-3


def test_forward_kl_equals_torch_kl_div() -> None:
    s, t, mask = _inputs(1)
    ours = forward_kl(s, t, mask, temperature=2.0)
    ref = F.kl_div(
        F.log_softmax(s[mask] / 2.0, -1), F.log_softmax(t[mask] / 2.0, -1),
        log_target=True, reduction="sum",
    ) / mask.sum()
    torch.testing.assert_close(ours, ref)


def test_reverse_kl_equals_torch_kl_div_with_roles_swapped() -> None:
    s, t, mask = _inputs(2)
    ref = F.kl_div(
        F.log_softmax(t[mask], -1), F.log_softmax(s[mask], -1), log_target=True, reduction="sum"
    ) / mask.sum()
    torch.testing.assert_close(reverse_kl(s, t, mask), ref)


def test_jsd_beta_limits_are_forward_and_reverse_kl() -> None:
    s, t, mask = _inputs(3)
    torch.testing.assert_close(generalized_jsd(s, t, mask, beta=0.0), forward_kl(s, t, mask))
    torch.testing.assert_close(generalized_jsd(s, t, mask, beta=1.0), reverse_kl(s, t, mask))


def test_jsd_divided_by_beta_tends_to_forward_kl() -> None:
    s, t, mask = _inputs(4, scale=1.0)
    small = generalized_jsd(s, t, mask, beta=1e-4) / 1e-4
    torch.testing.assert_close(small, forward_kl(s, t, mask), rtol=2e-2, atol=1e-3)
    near_one = generalized_jsd(s, t, mask, beta=1 - 1e-4) / 1e-4
    torch.testing.assert_close(near_one, reverse_kl(s, t, mask), rtol=2e-2, atol=1e-3)


def test_jsd_half_is_symmetric_and_bounded_by_log2() -> None:
    s, t, mask = _inputs(5, scale=8.0)
    a = generalized_jsd(s, t, mask, beta=0.5)
    b = generalized_jsd(t, s.detach(), mask, beta=0.5)
    torch.testing.assert_close(a, b)
    assert a.item() <= math.log(2) + 1e-6


def test_tvd_by_hand() -> None:
    p = torch.tensor([[[0.7, 0.2, 0.1]]]).log()
    q = torch.tensor([[[0.1, 0.2, 0.7]]]).log()
    mask = torch.ones(1, 1, dtype=torch.bool)
    assert tvd(q, p, mask).item() == pytest.approx(0.6, abs=1e-6)


def test_sequence_ce_equals_cross_entropy_on_valid_tokens() -> None:
    s, _, mask = _inputs(6)
    targets = torch.randint(0, V, (B, T))
    ref = F.cross_entropy(s[mask], targets[mask])
    torch.testing.assert_close(sequence_ce(s, targets, mask), ref)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_all_masked_gives_zero_not_nan_with_finite_grads(kind) -> None:
    s, t, _ = _inputs(7)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for loss in (divergence(kind, s, t, mask), sparse_divergence(kind, s,
                 sparse_from_logits(t, 4), mask), sequence_ce(s, torch.zeros(B, T).long(), mask)):
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(grad).all() and grad.abs().sum() == 0


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_gradients_finite_with_inf_logits_and_garbage_padding(kind) -> None:
    s, t, mask = _inputs(8)
    t = t.clone()
    t[..., :3] = -math.inf  # teacher gives some tokens probability 0
    with torch.no_grad():
        s[~mask] = math.nan  # garbage at padded positions must not leak
    loss = divergence(kind, s, t, mask, beta=0.3)
    if kind == "reverse_kl":
        # Student mass where the teacher has none: KL(S || T) is truly infinite (the
        # learner skips such a step and counts it); it must not be NaN.
        assert torch.isinf(loss)
    else:
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    sparse = sparse_divergence(kind, s, sparse_from_logits(t, 5), mask, beta=0.3)
    (grad,) = torch.autograd.grad(sparse, s)
    assert torch.isfinite(sparse) and torch.isfinite(grad).all()


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_sparse_with_k_equal_vocab_equals_dense(kind) -> None:
    s, t, mask = _inputs(9)
    dense = divergence(kind, s, t, mask, beta=0.4)
    sparse = sparse_divergence(kind, s, sparse_from_logits(t, V), mask, beta=0.4)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    g_dense = torch.autograd.grad(dense, s)[0]
    g_sparse = torch.autograd.grad(sparse, s)[0]
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_sparse_is_a_lower_bound_that_tightens_with_k(kind) -> None:
    s, t, mask = _inputs(10)
    dense = divergence(kind, s, t, mask).item()
    values = [sparse_divergence(kind, s, sparse_from_logits(t, k), mask).item() for k in (2, 5, V)]
    assert values[0] <= values[1] + 1e-6 <= dense + 2e-6
    assert values[2] == pytest.approx(dense, rel=1e-5)


@pytest.mark.parametrize("kind", [*DIVERGENCES, "ce", "sparse"])
def test_chunked_accumulation_equals_unchunked(kind) -> None:
    s, t, mask = _inputs(11)
    targets = torch.randint(0, V, (B, T))

    def loss(rows: slice, num_valid=None):
        if kind == "ce":
            return sequence_ce(s[rows], targets[rows], mask[rows], num_valid=num_valid)
        if kind == "sparse":
            sp = sparse_from_logits(t[rows], 4)
            return sparse_divergence("jsd", s[rows], sp, mask[rows], num_valid=num_valid)
        return divergence(kind, s[rows], t[rows], mask[rows], num_valid=num_valid)

    full = loss(slice(None))
    g_full = torch.autograd.grad(full, s)[0]
    total = int(mask.sum())
    chunks = loss(slice(0, 1), total) + loss(slice(1, B), total)
    g_chunks = torch.autograd.grad(chunks, s)[0]
    torch.testing.assert_close(chunks, full)
    torch.testing.assert_close(g_chunks, g_full)


def test_bf16_inputs_are_computed_in_fp32() -> None:
    s, t, mask = _inputs(12)
    loss = generalized_jsd(s.detach().bfloat16(), t.bfloat16(), mask)
    assert loss.dtype == torch.float32


def test_bad_arguments_are_rejected() -> None:
    s, t, mask = _inputs()
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(s, t, mask, temperature=0.0)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(s, t, mask, beta=1.5)
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence("hellinger", s, t, mask)  # type: ignore[arg-type]

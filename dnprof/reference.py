"""PyTorch references that every dnprof kernel and baseline is checked against.

All functions take fla's layout (``q, k, v: [B, T, H, D]``, ``beta: [B, T, H]``,
``initial_state: [N, H, K, V]``) and compute in ``dtype`` (float64 by default) so that the
reference error is far below any kernel's. They are written for clarity, not speed: the
recurrent form loops over tokens and the chunkwise form over chunks, both batched over B and H.
"""

from __future__ import annotations

from typing import Callable

import torch

Tensor = torch.Tensor


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalise the last dimension to unit L2 norm (fla's ``use_qk_l2norm_in_kernel``)."""
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps)


def _prepare(q, k, v, beta, scale, initial_state, use_qk_l2norm, dtype):
    q, k, v, beta = (t.to(dtype) for t in (q, k, v, beta))
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    h0 = None if initial_state is None else initial_state.to(dtype)
    return q * scale, k, v, beta, h0


def _split_varlen(
    fn: Callable, q, k, v, beta, initial_state, cu_seqlens: Tensor, **kwargs
) -> tuple[Tensor, Tensor]:
    """Run ``fn`` on each packed sequence of a ``B = 1`` batch and stitch the results."""
    bounds = [int(x) for x in cu_seqlens.tolist()]
    outs, finals = [], []
    for n, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[n : n + 1]
        o, ht = fn(q[:, start:end], k[:, start:end], v[:, start:end], beta[:, start:end], h0, **kwargs)
        outs.append(o)
        finals.append(ht)
    return torch.cat(outs, dim=1), torch.cat(finals, dim=0)


def _recurrent_core(q, k, v, beta, h0):
    """Token-by-token delta rule on prepared (scaled, normalised, upcast) inputs."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    h = torch.zeros(B, H, K, V, dtype=q.dtype, device=q.device) if h0 is None else h0.clone()
    o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
    for t in range(T):
        k_t, b_t = k[:, t], beta[:, t, :, None]  # [B, H, K], [B, H, 1]
        v_old = torch.einsum("bhk,bhkv->bhv", k_t, h)
        v_new = b_t * (v[:, t] - v_old)
        h = h + torch.einsum("bhk,bhv->bhkv", k_t, v_new)
        o[:, t] = torch.einsum("bhk,bhkv->bhv", q[:, t], h)
    return o, h


def recurrent_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor | None]:
    """The recurrent delta rule ``S_t = S_{t-1} + b_t (v_t - S_{t-1} k_t) k_t^T``, ``o_t = S_t (scale q_t)``.

    Returns ``(o [B, T, H, V], final_state [N, H, K, V] or None)`` in ``dtype``.
    """
    q, k, v, beta, h0 = _prepare(q, k, v, beta, scale, initial_state, use_qk_l2norm_in_kernel, dtype)
    if cu_seqlens is None:
        o, ht = _recurrent_core(q, k, v, beta, h0)
    else:
        o, ht = _split_varlen(_recurrent_core, q, k, v, beta, h0, cu_seqlens)
    return o, (ht if output_final_state else None)


def ut_transform(k_c: Tensor, v_c: Tensor, beta_c: Tensor) -> tuple[Tensor, Tensor]:
    """WY representation of one chunk: ``T = (I + tril(diag(b) K K^T, -1))^-1 diag(b)``, ``W = T K``, ``U = T V``.

    ``k_c: [B, H, c, K]``, ``v_c: [B, H, c, V]``, ``beta_c: [B, H, c]``.
    """
    c = k_c.shape[-2]
    eye = torch.eye(c, dtype=k_c.dtype, device=k_c.device)
    a = torch.tril(beta_c[..., :, None] * (k_c @ k_c.transpose(-1, -2)), diagonal=-1)
    t_mat = torch.linalg.solve_triangular(eye + a, torch.diag_embed(beta_c), upper=False, unitriangular=True)
    return t_mat @ k_c, t_mat @ v_c


def _chunk_core(q, k, v, beta, h0, chunk_size: int):
    """The paper's chunkwise algorithm on prepared inputs; the last chunk may be short."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
    bh = beta.transpose(1, 2)  # [B, H, T]
    s = torch.zeros(B, H, V, K, dtype=q.dtype, device=q.device) if h0 is None else h0.transpose(-1, -2).clone()
    outs = []
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        q_c, k_c, v_c, b_c = qh[:, :, start:end], kh[:, :, start:end], vh[:, :, start:end], bh[:, :, start:end]
        w, u = ut_transform(k_c, v_c, b_c)
        u_minus = u - w @ s.transpose(-1, -2)  # U - W S^T, [B, H, c, V]
        mask = torch.tril(torch.ones(end - start, end - start, dtype=torch.bool, device=q.device))
        attn = (q_c @ k_c.transpose(-1, -2)).masked_fill(~mask, 0)
        outs.append(q_c @ s.transpose(-1, -2) + attn @ u_minus)  # O = Q S^T + (Q K^T ⊙ M)(U - W S^T)
        s = s + u_minus.transpose(-1, -2) @ k_c  # S[t+1] = S[t] + (U - W S^T)^T K
    o = torch.cat(outs, dim=2).transpose(1, 2)
    return o, s.transpose(-1, -2)


def chunk_delta_rule_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor | None]:
    """The chunkwise-parallel delta rule exactly as Yang et al. (2024) write it, for any chunk size and T."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    q, k, v, beta, h0 = _prepare(q, k, v, beta, scale, initial_state, use_qk_l2norm_in_kernel, dtype)
    if cu_seqlens is None:
        o, ht = _chunk_core(q, k, v, beta, h0, chunk_size)
    else:
        o, ht = _split_varlen(_chunk_core, q, k, v, beta, h0, cu_seqlens, chunk_size=chunk_size)
    return o, (ht if output_final_state else None)


def causal_softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Causal softmax attention in ``[B, T, H, D]`` layout, the FlashAttention baselines' reference."""
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    T = q.shape[-2]
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


def gla_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor | None]:
    """Gated linear attention as fla's ``chunk_gla`` takes it.

    ``g [B, T, H, K]`` is a log-space forget gate: ``h_t = diag(exp(g_t)) h_{t-1} + k_t^T v_t``,
    ``o_t = scale * q_t h_t``.
    """
    q, k, v, g = (x.to(dtype) for x in (q, k, v, g))
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    h = torch.zeros(B, H, K, V, dtype=dtype, device=q.device) if initial_state is None else initial_state.to(dtype).clone()
    o = torch.empty(B, T, H, V, dtype=dtype, device=q.device)
    for t in range(T):
        h = h * g[:, t].exp()[..., None] + torch.einsum("bhk,bhv->bhkv", k[:, t], v[:, t])
        o[:, t] = torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, h)
    return o, (h if output_final_state else None)

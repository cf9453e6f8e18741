"""Batched top-p (nucleus) / top-k / temperature sampling of one token per row.

``top_p_sample(logits, top_p=1.0, top_k=0, temperature=1.0, rule="pix2seq", generator=None,
backend="auto", return_logprobs=False) -> ids`` (or ``(ids, logprobs)``)

- ``logits`` ``[B, V]`` fp32/fp16/bf16. ``-inf`` entries are masked tokens (allowed while at least one
  entry of the row is finite); ``NaN`` and ``+inf`` are errors.
- ``top_p``, ``top_k``, ``temperature``: each a number or a per-row tensor ``[B]`` (float, int, float).
- returns ``ids`` int64 ``[B]``; with ``return_logprobs=True`` also ``logprobs`` float32 ``[B]``: the
  chosen token's log-probability under the model's **full, untempered** distribution,
  ``log_softmax(logits)[ids]`` (temperature 1, no top-k/top-p truncation) — what keypoint scores and
  sequence likelihoods need, independent of the sampling settings.

Semantics (every backend implements exactly these; the reference below is the oracle):

1. **Greedy** rows: ``top_p <= 0`` or ``temperature == 0`` → ``argmax(logits)`` (lowest index among ties).
2. **Temperature**: ``s = logits.float() / temperature`` (fp32 division, as in every kernel).
   Tokens are ranked by ``s``; tokens with equal ``s`` are *tied* and are always kept or dropped together.
3. **Top-k** (``top_k > 0``): keep tokens with ``s >= `` the k-th largest ``s`` (ties at the boundary kept,
   as in the authors' code and Hugging Face's warper). ``top_k = 0`` or ``>= V`` disables it.
4. **Top-p** on ``q`` = the softmax of ``s`` renormalised over the top-k survivors (``top_p >= 1``
   disables it). With ``G(i)`` = total ``q`` of tokens with ``s`` strictly greater than ``s_i``:

   - ``rule="pix2seq"`` (the authors' ``top_logits``: descending sort, *inclusive* cumsum ``<= p``, keep
     logits ``>=`` the smallest such logit, and at least the top one): token ``i`` is kept iff
     ``G(i) + q_i <= p``, or ``s_i`` is the maximum.
   - ``rule="standard"`` (Holtzman / Hugging Face / vLLM: the smallest prefix with cumulative ``>= p``):
     token ``i`` is kept iff ``G(i) < p``.

   Both conditions are monotone in ``s_i``, so the kept set is ``{i : s_i >= tau}`` for a threshold
   ``tau`` that a sort-free kernel finds by threshold comparisons and bucket/radix selection.
5. **Draw**: with one uniform ``u`` in ``[0, 1)`` per row (``torch.rand(B, generator=generator)`` on
   the logits' device, drawn here and passed to every backend, for greedy rows too), the token is the
   first index ``i`` (in vocabulary order) whose running sum of kept weights ``exp(s - max s)``
   exceeds ``u`` times their total: the inverse CDF over the kept set in index order. Given the same
   uniforms, every backend returns the same token except when ``u`` falls within float rounding
   (~1e-6 relative) of a CDF step or a top-p boundary lies within rounding of ``p``.

Checks: argument shapes, dtypes, devices, Python numbers and the rule raise ``ValueError`` naming the
argument. Values inside tensors are checked when they live on the CPU (per-row parameters here; logits
here for ``ref``/``triton`` and by the C++ kernel's ``TORCH_CHECK`` for ``cpp``). On CUDA that would
cost a host sync per decode step, so values are not checked there: the CUDA and Triton kernels (and
the reference) write id ``-1`` (logprob NaN) for a row with a NaN/+inf logit, without a finite logit,
or whose ``logits / temperature`` overflows fp32;
negative ``temperature`` counts as greedy and ``top_k < 0`` as 0 there.

Backends (``_backend.resolve_backend``): ``ref`` (sort-based, this file); ``cpp`` (one pass for the
max, one vectorised pass for weights, a histogram over logit buckets of the tokens that can hold the
threshold — for top-p alone only the most probable tokens holding more than p — then only the
boundary bucket's few tokens are sorted; OpenMP over rows; called straight through
``_C.top_p_sample_cpu``, which takes number settings as they are and draws the uniforms in C++ from
the generator as ``torch.rand`` does, so a call costs no tensor per setting and no dispatcher round);
``cuda`` (radix selection of the thresholds, 8 bits a round, one block per row); ``triton`` (the
same radix selection, 4 bits a round, one program per row). The kernels keep masses in 2^-40 fixed
point (``csrc/include/pix2seq_fast/top_p.h``): exact, order-independent sums, so a token more than
~28 nats below the row's maximum weighs 0 there and is never drawn (the reference gives each such token a probability below 1e-12).
"""
from __future__ import annotations

import functools
import numbers

import torch

from pix2seq_fast._ext import load_extension
from pix2seq_fast.ops._backend import check_tensor, resolve_backend

OP = "top_p_sample"
RULES = ("pix2seq", "standard")
LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT64_MAX = 2 ** 63 - 1
_PLAIN_NUMBERS = (float, int)  # settings the C++ entry takes as they are (bool, numpy scalars: checked here)

__all__ = ["top_p_sample", "top_p_sample_reference", "kept_mask_reference", "RULES"]


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------
def greedy_rows(top_p: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: rows decoded by argmax."""
    return (top_p <= 0) | (temperature <= 0)


def tempered_logits(logits: torch.Tensor, top_p: torch.Tensor, temperature: torch.Tensor):
    """``[B, V]`` fp32 ``logits / temperature`` (greedy rows divided by 1)."""
    divisor = torch.where(greedy_rows(top_p, temperature), torch.ones_like(temperature), temperature)
    return logits.float() / divisor.view(-1, 1)


def kept_mask_reference(scaled: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                        rule: str) -> torch.Tensor:
    """``[B, V]`` bool: the tokens rules 3-4 of the module docstring keep, by a full sort.

    ``scaled`` ``[B, V]`` fp32 tempered logits (each row with a finite maximum); ``top_p`` ``[B]``;
    ``top_k`` ``[B]`` int. Probabilities are accumulated in float64.
    """
    batch, vocab = scaled.shape
    sorted_s, order = torch.sort(scaled, dim=-1, descending=True, stable=True)
    rank = torch.arange(vocab, device=scaled.device).expand(batch, vocab)

    k = top_k.to(torch.int64)
    k = torch.where((k <= 0) | (k >= vocab), torch.full_like(k, vocab), k)
    kth = sorted_s.gather(1, (k - 1).view(-1, 1))
    keep_k = sorted_s >= kth

    weights = torch.exp((sorted_s - sorted_s[:, :1]).double()) * keep_k
    probs = weights / weights.sum(-1, keepdim=True)
    cumulative = probs.cumsum(-1)
    exclusive = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=-1)
    new_group = torch.ones_like(keep_k)
    new_group[:, 1:] = sorted_s[:, 1:] != sorted_s[:, :-1]
    group_start = torch.where(new_group, rank, torch.zeros_like(rank)).cummax(-1).values
    mass_above = exclusive.gather(1, group_start)  # G(i): mass strictly more probable

    p = top_p.double().view(-1, 1)
    if rule == "pix2seq":
        keep_p = (mass_above + probs <= p) | (group_start == 0)
    else:
        keep_p = mass_above < p
    keep_p = keep_p | (p >= 1)
    keep_sorted = keep_k & keep_p
    return torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)


def invalid_rows(logits: torch.Tensor, top_p=None, temperature=None) -> torch.Tensor:
    """``[B]`` bool: rows with a NaN or +inf logit, no finite logit, or (given the settings) a
    sampled row whose ``logits / temperature`` overflows fp32."""
    x = logits.float()
    bad = torch.isnan(x).any(-1) | (x == float("inf")).any(-1) | (x == float("-inf")).all(-1)
    if temperature is not None:
        scaled_max = tempered_logits(x.max(-1, keepdim=True).values, top_p, temperature).view(-1)
        bad = bad | (scaled_max == float("inf"))
    return bad


def top_p_sample_reference(logits, top_p, top_k, temperature, uniforms, rule="pix2seq"):
    """Sort-based reference. ``logits`` ``[B, V]``; ``top_p``, ``temperature`` fp32 ``[B]``; ``top_k``
    int ``[B]``; ``uniforms`` ``[B]`` in ``[0, 1)``. Returns ``(ids int64 [B], logprobs fp32 [B])``;
    invalid rows (see :func:`invalid_rows`) get id -1 and logprob NaN."""
    batch, vocab = logits.shape
    invalid = invalid_rows(logits, top_p, temperature)
    x = torch.where(invalid.view(-1, 1), torch.zeros_like(logits), logits).float()
    scaled = tempered_logits(x, top_p, temperature)
    kept = kept_mask_reference(scaled, top_p, top_k, rule)

    weights = torch.exp((scaled - scaled.max(-1, keepdim=True).values).double()) * kept
    cdf = weights.cumsum(-1)
    target = uniforms.double().view(-1, 1) * cdf[:, -1:]
    drawn = torch.searchsorted(cdf, target, right=True).view(-1).clamp_(max=vocab - 1)
    ids = torch.where(greedy_rows(top_p, temperature), x.argmax(-1), drawn)

    logprobs = torch.log_softmax(x.double(), -1).gather(1, ids.view(-1, 1)).view(-1).float()
    ids = torch.where(invalid, torch.full_like(ids, -1), ids)
    logprobs = torch.where(invalid, torch.full_like(logprobs, float("nan")), logprobs)
    return ids, logprobs


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _is_number(value) -> bool:
    kind = type(value)
    if kind is float or kind is int:  # fast path: the ABC check below costs microseconds
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _per_row(name: str, value, batch: int, device: torch.device, dtype: torch.dtype, integer: bool,
             numbers_as_is: bool = False):
    """A number or a ``[B]`` (or 0-d) tensor -> contiguous ``[B]`` tensor of ``dtype`` on ``device``
    (with ``numbers_as_is``, a number stays a Python ``int``/``float``)."""
    if isinstance(value, torch.Tensor):
        if value.device != device:
            raise ValueError(f"{OP}: {name} is on {value.device} but logits are on {device}")
        if value.dtype == torch.bool or (integer and value.dtype.is_floating_point) or value.is_complex():
            kind = "an integer" if integer else "a real"
            raise ValueError(f"{OP}: {name} must be {kind} tensor, got dtype {value.dtype}")
        if value.dim() == 0:
            value = value.expand(batch)
        if value.dim() != 1 or value.shape[0] != batch:
            raise ValueError(f"{OP}: {name} must be a number or a tensor of shape [{batch}] "
                             f"(one value per row), got shape {tuple(value.shape)}")
        return value.to(dtype).contiguous()
    if integer:
        if type(value) is not int and (not isinstance(value, numbers.Integral) or isinstance(value, bool)):
            raise ValueError(f"{OP}: {name} must be an int or an integer tensor [B], got {value!r}")
        value = min(int(value), _INT64_MAX)  # top_k >= V disables it: beyond int64 means the same
    elif not _is_number(value):
        raise ValueError(f"{OP}: {name} must be a number or a tensor [B], got {value!r}")
    else:
        value = float(value)
    return value if numbers_as_is else torch.full((batch,), value, dtype=dtype, device=device)


def _check_number_values(top_p, top_k, temperature):
    if _is_number(top_p) and not (top_p <= 1.0):  # also rejects NaN
        raise ValueError(f"{OP}: top_p must be <= 1 (<= 0 means greedy), got {top_p}")
    if type(top_k) is int:  # fast path: the ABC check below costs half a microsecond
        if top_k < 0:
            raise ValueError(f"{OP}: top_k must be >= 0 (0 disables it), got {top_k}")
    elif isinstance(top_k, numbers.Integral) and not isinstance(top_k, bool) and top_k < 0:
        raise ValueError(f"{OP}: top_k must be >= 0 (0 disables it), got {top_k}")
    if _is_number(temperature) and not (0.0 <= temperature < float("inf")):
        raise ValueError(f"{OP}: temperature must be finite and >= 0 (0 means greedy), got {temperature}")


def check_row_values(top_p, top_k, temperature):
    """Value checks of the ``[B]`` parameter tensors given by the caller (numbers were checked
    already; call only for CPU tensors: reads values)."""
    if isinstance(top_p, torch.Tensor) and not bool((top_p <= 1).all()):
        raise ValueError(f"{OP}: top_p must be <= 1 and not NaN in every row, got {top_p.tolist()}")
    if isinstance(top_k, torch.Tensor) and not bool((top_k >= 0).all()):
        raise ValueError(f"{OP}: top_k must be >= 0 in every row, got {top_k.tolist()}")
    if isinstance(temperature, torch.Tensor) and not bool(
            ((temperature >= 0) & (temperature < float("inf"))).all()):
        raise ValueError(f"{OP}: temperature must be finite and >= 0 in every row, "
                         f"got {temperature.tolist()}")


def check_logit_values(logits: torch.Tensor, top_p: torch.Tensor, temperature: torch.Tensor):
    """Raise ``ValueError`` for NaN/+inf logits, a row without a finite logit, or ``logits /
    temperature`` overflowing fp32 (reads values)."""
    x = logits.float()
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{OP}: logits contain NaN (rows {torch.isnan(x).any(-1).nonzero().view(-1).tolist()})")
    if bool((x == float("inf")).any()):
        raise ValueError(f"{OP}: logits contain +inf")
    if bool((x == float("-inf")).all(-1).any()):
        raise ValueError(f"{OP}: a row of logits is entirely -inf (no token can be drawn)")
    if bool(invalid_rows(x, top_p, temperature).any()):
        raise ValueError(f"{OP}: logits / temperature overflows float32 (temperature too small)")


def _check_generator(generator, device: torch.device):
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{OP}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    gen_device = generator.device
    same = gen_device.type == device.type and (
        gen_device.index is None or device.index is None or gen_device.index == device.index)
    if not same:
        raise ValueError(f"{OP}: generator is on {gen_device} but logits are on {device}")


_REGISTERED = []


def _kernel_registered() -> bool:
    if not _REGISTERED and hasattr(torch.ops.pix2seq_fast, OP):
        _REGISTERED.append(True)  # registration is permanent once the extension is loaded
    return bool(_REGISTERED)


@functools.cache
def _cpu_entry():
    """``_C.top_p_sample_cpu`` (the C++ kernel called without the dispatcher), or None."""
    ext = load_extension()
    return getattr(ext, "top_p_sample_cpu", None)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def top_p_sample(logits, top_p=1.0, top_k=0, temperature=1.0, rule="pix2seq", generator=None,
                 backend="auto", return_logprobs=False):
    """Sample one token per row of ``logits`` ``[B, V]``; see the module docstring.

    Returns ``ids`` int64 ``[B]``, or ``(ids, logprobs)`` (fp32 ``[B]``, full untempered
    log-softmax of the chosen token) when ``return_logprobs``.
    """
    if (type(logits) is torch.Tensor and logits.is_cpu and (backend == "auto" or backend == "cpp")
            and type(top_p) in _PLAIN_NUMBERS and type(top_k) is int and type(temperature) in _PLAIN_NUMBERS
            and (generator is None or type(generator) is torch.Generator) and _cpu_entry() is not None):
        # the decode loops' call: the C++ entry makes every check below itself (same messages)
        try:
            ids, logprobs = _cpu_entry()(logits, top_p, top_k, temperature, generator, rule, return_logprobs)
            return (ids, logprobs) if return_logprobs else ids
        except TypeError:  # a number beyond int64 / float: the checks below name it
            pass
    check_tensor("logits", logits, op=OP, dim=2, dtypes=LOGIT_DTYPES)
    batch, vocab = logits.shape
    if vocab == 0:
        raise ValueError(f"{OP}: logits must have at least one token per row, got shape {tuple(logits.shape)}")
    if rule not in RULES:
        raise ValueError(f"{OP}: rule must be one of {RULES}, got {rule!r}")
    device = logits.device
    _check_generator(generator, device)
    _check_number_values(top_p, top_k, temperature)
    if device.type == "cpu" and (backend == "auto" or backend == "cpp") and _cpu_entry() is not None:
        # the C++ kernel checks every row's values itself and draws the uniforms with torch.rand's RNG
        ids, logprobs = _cpu_entry()(
            logits.contiguous(), _per_row("top_p", top_p, batch, device, torch.float32, False, True),
            _per_row("top_k", top_k, batch, device, torch.int64, True, True),
            _per_row("temperature", temperature, batch, device, torch.float32, False, True), generator,
            rule, return_logprobs)
        return (ids, logprobs) if return_logprobs else ids
    p = _per_row("top_p", top_p, batch, device, torch.float32, integer=False)
    k = _per_row("top_k", top_k, batch, device, torch.int64, integer=True)
    t = _per_row("temperature", temperature, batch, device, torch.float32, integer=False)
    requested = backend
    backend = resolve_backend(backend, device, OP)
    if backend in ("cpp", "cuda") and not _kernel_registered():
        if requested != "auto":
            raise ValueError(f"{OP}: backend={requested!r} but the extension has no top_p_sample "
                             "kernel (rebuild it with .ci/dev-install)")
        backend = "ref"
    on_cpu = device.type == "cpu"
    if on_cpu:
        check_row_values(top_p if isinstance(top_p, torch.Tensor) else None,
                         top_k if isinstance(top_k, torch.Tensor) else None,
                         temperature if isinstance(temperature, torch.Tensor) else None)
        if backend != "cpp":  # the C++ kernel TORCH_CHECKs logits itself, inside its one pass
            check_logit_values(logits, p, t)

    logits = logits.contiguous()
    uniforms = torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
    if batch == 0:
        ids = torch.empty(0, dtype=torch.int64, device=device)
        logprobs = torch.empty(0, dtype=torch.float32, device=device)
    elif backend == "ref":
        ids, logprobs = top_p_sample_reference(logits, p, k, t, uniforms, rule)
    elif backend == "triton":
        from pix2seq_fast.ops.triton_sampling import top_p_sample_triton  # noqa: PLC0415
        ids, logprobs = top_p_sample_triton(logits, p, k, t, uniforms, rule, return_logprobs)
    else:  # cpp / cuda: the same op, dispatched on the device
        ids, logprobs = torch.ops.pix2seq_fast.top_p_sample(logits, p, k, t, uniforms, rule,
                                                           return_logprobs)
    return (ids, logprobs) if return_logprobs else ids

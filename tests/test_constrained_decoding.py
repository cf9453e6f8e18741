"""Constrained decoding (generation/constrained.py): no emitted token ever leaves the task grammar's
allowed set (property test over random models = random logits, every task, sampled and greedy, both
sampling backends), and when the model already puts all its mass inside the allowed set the
constrained decode equals the unconstrained one (tokens, log-probs, recorded slices). Also the
plumbing through ``predict(..., constrained=True)``."""
import pytest
import torch

from pix2seq_fast.generation import SamplingConfig, generate
from pix2seq_fast.generation.constrained import (TokenConstraint, constraint_for_prompts,
                                                 task_constraint)
from pix2seq_fast.model import create_model
from pix2seq_fast.model.quantize import quantize_decoder

SMALL_VOCAB = dict(class_offset=100, num_classes=50, coord_offset=150, bins=100, text_offset=250,
                   text_vocab_size=6)
TASK_PROMPT = {"detect": 10, "segment": 11, "keypoints": 12, "caption": 13}

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed, sharpen=3.0):
    torch.manual_seed(seed)
    model = create_model("tiny", enc_layers=1, max_seq_len=64, vocab=SMALL_VOCAB).eval()
    with torch.no_grad():  # random logits spread over the whole vocabulary
        model.decoder.token_embedding.weight.mul_(sharpen)
        model.decoder.output_bias.normal_(0.0, 2.0)
    return model


def memory_of(model, n=2, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.encode(torch.rand(n, 3, 64, 64))


def prompts_for(task, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = 1 if task in ("detect", "caption") else 6
    prompts = torch.randint(150, 250, (batch, width), generator=g)
    prompts[:, 0] = TASK_PROMPT[task]
    return prompts


def decode(model, memory, task, constraint, sampling, steps=15, batch=5, seed=0, record=None, backend="cpp",
           stop_on_eos=False):
    prompts = prompts_for(task, batch, seed)
    return generate(model, memory, prompts, torch.full((batch,), prompts.shape[1]),
                    torch.arange(batch) % memory.shape[0], steps, sampling, record=record,
                    stop_on_eos=stop_on_eos, generator=torch.Generator().manual_seed(seed),
                    sampling_backend=backend, constraint=constraint)


def allowed_mask(constraint, t, vocab_size):
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[constraint.allowed(t)] = True
    return mask


@pytest.mark.parametrize("backend", ["ref", "cpp"])
@pytest.mark.parametrize("task", ["detect", "segment", "keypoints", "caption"])
@pytest.mark.parametrize("seed", range(4))
def test_no_token_leaves_the_allowed_set(task, seed, backend):
    model = make_model(seed)
    vocab = model.config.vocab
    memory = memory_of(model, seed=seed + 10)
    constraint = task_constraint(task, vocab)
    for sampling in (SamplingConfig(top_p=1.0, temperature=2.0), SamplingConfig(top_p=0.7),
                     SamplingConfig(greedy=True), SamplingConfig(top_k=3, rule="standard")):
        out = decode(model, memory, task, constraint, sampling, seed=seed, backend=backend)
        for t in range(out.tokens.shape[1]):
            ok = allowed_mask(constraint, t, vocab.vocab_size)[out.tokens[:, t]]
            assert bool(ok.all()), (task, sampling, t, out.tokens[:, t])
        assert torch.isfinite(out.logprobs).all() and (out.logprobs <= 0).all()


def test_unconstrained_random_model_does_leave_the_set():
    """The property test above is not vacuous: the same models unconstrained emit outside tokens."""
    model = make_model(0)
    memory = memory_of(model)
    constraint = task_constraint("segment", model.config.vocab)
    out = decode(model, memory, "segment", None, SamplingConfig(top_p=1.0, temperature=2.0))
    inside = allowed_mask(constraint, 0, model.config.vocab_size)[out.tokens]
    assert not bool(inside.all())


@pytest.mark.parametrize("task", ["segment", "keypoints", "caption"])
@pytest.mark.parametrize("sampling", [SamplingConfig(top_p=0.8), SamplingConfig(greedy=True),
                                      SamplingConfig(top_p=1.0, temperature=1.5)],
                         ids=["top_p", "greedy", "tempered"])
def test_equals_unconstrained_when_mass_is_inside(task, sampling):
    model = make_model(3)
    vocab = model.config.vocab
    constraint = task_constraint(task, vocab)
    with torch.no_grad():  # all the mass inside the (single) allowed set
        outside = ~allowed_mask(constraint, 0, vocab.vocab_size)
        model.decoder.output_bias[outside] = float("-inf")
    memory = memory_of(model)
    record = (vocab.coord_offset, vocab.coord_offset + vocab.bins)
    free = decode(model, memory, task, None, sampling, record=record)
    bound = decode(model, memory, task, constraint, sampling, record=record)
    torch.testing.assert_close(bound.tokens, free.tokens, rtol=0, atol=0)
    torch.testing.assert_close(bound.logprobs, free.logprobs, rtol=1e-5, atol=1e-5)
    finite = torch.isfinite(free.recorded)
    assert torch.equal(finite, torch.isfinite(bound.recorded))
    torch.testing.assert_close(bound.recorded[finite], free.recorded[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exact", [True, False])
def test_detection_equals_unconstrained_when_mass_is_inside(exact):
    """Detection's grammar changes with the position (coordinates, then a class): a model whose
    distribution at each position is already inside that position's set decodes identically. The
    class positions project the whole vocabulary when ``exact_class_scores`` (the recorded class
    log-probs then equal the unconstrained ones everywhere)."""
    model = make_model(5)
    vocab = model.config.vocab
    constraint = task_constraint("detect", vocab, exact_class_scores=exact)
    memory = memory_of(model)
    record = (vocab.class_offset, vocab.class_offset + vocab.num_classes)
    sampling = SamplingConfig(top_p=0.6)
    # Rebuild the same draws from an unconstrained model whose logits are masked per position.
    decoder = model.decoder
    original = decoder.logits
    step = {"t": 0}

    def masked_logits(hidden):
        logits = original(hidden)
        if hidden.dim() == 2:  # decode steps and the prefill's last row: one position per call
            keep = allowed_mask(constraint, step["t"], vocab.vocab_size)
            step["t"] += 1
            logits = logits.masked_fill(~keep, float("-inf"))
        return logits

    decoder.logits = masked_logits
    try:
        masked = decode(model, memory, "detect", None, sampling, steps=15, record=record)
    finally:
        del decoder.logits
    bound = decode(model, memory, "detect", constraint, sampling, steps=15, record=record)
    torch.testing.assert_close(bound.tokens, masked.tokens, rtol=0, atol=0)
    torch.testing.assert_close(bound.logprobs, masked.logprobs, rtol=1e-5, atol=1e-5)
    class_positions = bound.recorded[:, 4::5]
    if exact:  # the authors' full-vocabulary class log-probs, as without constraints
        torch.testing.assert_close(class_positions, _full_record(model, memory, bound, record)[:, 4::5],
                                   rtol=1e-5, atol=1e-5)
    else:  # renormalised over the class tokens
        torch.testing.assert_close(class_positions.exp().sum(-1), torch.ones(class_positions.shape[:2]),
                                   rtol=1e-4, atol=1e-4)


def _full_record(model, memory, out, record):
    """The unconstrained full-vocabulary log-softmax window along ``out.tokens`` (teacher forcing)."""
    prompts = prompts_for("detect", out.tokens.shape[0])
    tokens = torch.cat([prompts, out.tokens[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model.decoder(tokens, memory[torch.arange(tokens.shape[0]) % memory.shape[0]])
    return torch.log_softmax(logits.float(), -1)[:, :, record[0]:record[1]]


def test_detection_allow_end_and_early_stop():
    model = make_model(2)
    vocab = model.config.vocab
    with torch.no_grad():
        model.decoder.output_bias[vocab.pad] = 8.0  # PAD likely where it is allowed
    constraint = task_constraint("detect", vocab, allow_end=True)
    out = decode(model, memory_of(model), "detect", constraint, SamplingConfig(top_p=1.0), steps=20,
                 stop_on_eos=True)
    for t in range(out.tokens.shape[1]):
        live = t < out.lengths
        ok = allowed_mask(constraint, t, vocab.vocab_size)[out.tokens[:, t]] | ~live
        assert bool(ok.all())
    assert bool((out.lengths % 5 == 1).all())  # each row ended on PAD at an object's first slot


def test_quantized_head_slices():
    """Constrained decoding projects through the low-precision output layer's row slice."""
    model = quantize_decoder(make_model(1), "bf16")
    constraint = task_constraint("keypoints", model.config.vocab)
    out = decode(model, memory_of(model), "keypoints", constraint, SamplingConfig(top_p=0.5))
    ok = allowed_mask(constraint, 0, model.config.vocab_size)[out.tokens]
    assert bool(ok.all())


def test_constraint_for_prompts_and_errors():
    vocab = make_model(0).config.vocab
    assert constraint_for_prompts(torch.tensor([[11, 3], [11, 4]]), vocab) is task_constraint("segment", vocab)
    assert constraint_for_prompts(torch.tensor([[11], [10]]), vocab) is None
    assert constraint_for_prompts(torch.tensor([[99]]), vocab) is None
    with pytest.raises(ValueError, match="task must be"):
        task_constraint("nope", vocab)
    with pytest.raises(ValueError, match="sorted"):
        TokenConstraint((torch.tensor([3, 2]),), (False,))
    with pytest.raises(ValueError, match="equal length"):
        TokenConstraint((torch.tensor([1]),), ())
    model = make_model(0)
    with pytest.raises(ValueError, match="outside"):
        decode(model, memory_of(model), "segment", TokenConstraint((torch.tensor([5, 10 ** 6]),), (False,)),
               SamplingConfig())


def test_predict_constrained_option():
    from pix2seq_fast.predictor import predict

    model = make_model(4)
    images = [torch.rand(3, 40, 56), torch.rand(3, 64, 48)]
    dets = predict(model, images, "detect", constrained=True, max_objects=4, seed=0)
    assert all(len(d) <= 4 for d in dets)
    free = predict(model, images, "detect", max_objects=4, seed=0)
    assert len(free) == len(dets)

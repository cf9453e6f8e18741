"""Recorded log-probabilities (``generate(record=...)``) are ``log_softmax`` over the whole vocabulary
on both engines, also for extreme logits, where ``logits - logsumexp`` in fp32 rounds to 0."""
import math

import pytest
import torch

from pix2seq_fast.generation import SamplingConfig, generate, generate_uncached
from pix2seq_fast.model import create_model

SMALL_VOCAB = dict(class_offset=100, num_classes=50, coord_offset=150, bins=100, text_offset=250, text_vocab_size=6)
V = 256

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flat_model():
    """Every logit is exactly -1e9: zero token embeddings (shared with the output layer) + bias."""
    torch.manual_seed(0)
    model = create_model("tiny", enc_layers=1, enc_dim=64, enc_mlp=128, max_seq_len=16,
                         vocab=SMALL_VOCAB).eval()
    with torch.no_grad():
        model.decoder.token_embedding.weight.zero_()
        model.decoder.output_bias.fill_(-1e9)
    return model


@pytest.mark.parametrize("backend", ["ref", "cpp"])
def test_uniform_minus_1e9_logits_record_one_over_v(flat_model, backend):
    memory = flat_model.encode(torch.rand(1, 3, 32, 32))
    prompts = torch.full((2, 1), 10)
    record = (100, 150)  # the class tokens, as detection records them
    sampling = SamplingConfig(greedy=True)
    fast = generate(flat_model, memory, prompts, torch.ones(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64),
                    3, sampling, record=record, attention_backend=backend, sampling_backend=backend)
    reference = generate_uncached(flat_model, memory, prompts, torch.zeros(2, dtype=torch.int64), 3, sampling,
                                  record=record)
    want = torch.full((2, 3, 50), -math.log(V))
    torch.testing.assert_close(fast.recorded, want)
    torch.testing.assert_close(reference.recorded, want)
    torch.testing.assert_close(fast.recorded.exp(), torch.full((2, 3, 50), 1.0 / V))
    # the bug this pins: logits - logsumexp(logits) == 0 in fp32, a class score of 1.0
    logits = torch.full((1, V), -1e9)
    assert float((logits - torch.logsumexp(logits, -1, keepdim=True))[0, 0]) == 0.0

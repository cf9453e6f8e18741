"""The authors' TF2 checkpoint keys -> our state-dict keys (tf_parity README §7).

``tf_config_to_model_config(tf_config)`` builds our ``ModelConfig`` from the authors' ``config.json``
(whole dict or its ``model`` section); ``map_tf_weights(tf_tensors, config)`` turns the checkpoint's
model tensors (keys with or without the ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix) into a state dict for
``Pix2Seq(config)``. Optimizer slots, counters and other non-model entries are skipped deliberately;
an unmapped ``model/`` tensor, a missing one or a shape that disagrees with the config is a
``ValueError`` naming the key.

Layouts: Conv2D ``[kh, kw, in, out]`` -> ``permute(3, 2, 0, 1)``; Dense ``[in, out]`` -> ``.T``;
MHA q/k/v ``[D, H, K]`` -> ``reshape(D, H*K).T`` and bias ``[H, K]`` -> ``[H*K]``; MHA output
``[H, K, D]`` -> ``reshape(H*K, D).T``; LayerNorm gamma/beta -> weight/bias. timm's fused ``qkv``
is the concatenation of q, k and v along the output features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pix2seq_fast.model.checkpoint import state_problems
from pix2seq_fast.model.config import ModelConfig
from pix2seq_fast.vocab import Vocab

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
OPTIMIZER_SLOT = ".OPTIMIZER_SLOT"


def _model_section(tf_config: dict) -> dict:
    if not isinstance(tf_config, dict):
        raise ValueError(f"tf_config must be a dict (the authors' config.json), got {type(tf_config).__name__}")
    return tf_config["model"] if "model" in tf_config and isinstance(tf_config["model"], dict) else tf_config


def _quantization_bins(tf_config: dict, default: int = 1000) -> int:
    tasks = []
    if isinstance(tf_config.get("task"), dict):
        tasks.append(tf_config["task"])
    if isinstance(tf_config.get("tasks"), list):
        tasks.extend(t for t in tf_config["tasks"] if isinstance(t, dict))
    bins = {int(t["quantization_bins"]) for t in tasks if "quantization_bins" in t}
    if len(bins) > 1:
        raise ValueError(f"tf_config: tasks disagree on quantization_bins {sorted(bins)}")
    return bins.pop() if bins else default


def _image_size(size):
    """The authors' ``image_size`` (``S`` or ``[H, W]``) -> ours, both sides kept (a 64×96 model
    keeps its 4×6 patch grid)."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return tuple(int(v) for v in size)
    if isinstance(size, (int, float)) and not isinstance(size, bool) and int(size) == size:
        return int(size)
    raise ValueError(f"tf_config: model.image_size must be an int or [H, W], got {size!r}")


def tf_config_to_model_config(tf_config: dict) -> ModelConfig:
    """The authors' ``config.json`` (whole or its ``model`` section) -> our ``ModelConfig``;
    ``image_size`` ``[H, W]`` stays ``(H, W)`` (a square becomes one side)."""
    m = _model_section(tf_config)
    required = ("resnet_variant", "image_size", "patch_size", "num_encoder_layers", "dim_att", "dim_mlp",
                "num_heads", "num_decoder_layers", "dim_att_dec", "dim_mlp_dec", "num_heads_dec",
                "vocab_size", "max_seq_len")
    absent = [k for k in required if k not in m]
    if absent:
        raise ValueError(f"tf_config: model section lacks {absent}")
    expected = {"name": "encoder_ar_decoder", "pos_encoding": "sin_cos", "pos_encoding_dec": "learned",
                "use_cls_token": False, "shared_decoder_embedding": True, "decoder_output_bias": True,
                "dec_proj_mode": "mlp"}
    for key, value in expected.items():
        if key in m and m[key] != value:
            raise ValueError(f"tf_config: model.{key}={m[key]!r} is not supported (only {value!r})")
    if m["resnet_variant"] != "c1":
        raise ValueError(f"tf_config: model.resnet_variant={m['resnet_variant']!r}: only ViT checkpoints "
                         "('c1') are supported; the authors' ResNet keys do not map onto timm's ResNet")
    coord_offset = int(m.get("coord_vocab_shift", 1000))
    text_offset = int(m.get("text_vocab_shift", 3000))
    vocab_size = int(m["vocab_size"])
    if vocab_size < text_offset:
        raise ValueError(f"tf_config: vocab_size {vocab_size} < text_vocab_shift {text_offset}")
    vocab = Vocab(coord_offset=coord_offset, text_offset=text_offset, text_vocab_size=vocab_size - text_offset,
                  bins=_quantization_bins(tf_config if "model" in tf_config else {}))
    return ModelConfig(
        encoder="vit", image_size=_image_size(m["image_size"]), patch_size=int(m["patch_size"]),
        enc_layers=int(m["num_encoder_layers"]), enc_dim=int(m["dim_att"]), enc_mlp=int(m["dim_mlp"]),
        enc_heads=int(m["num_heads"]), dec_layers=int(m["num_decoder_layers"]),
        dec_dim=int(m["dim_att_dec"]), dec_mlp=int(m["dim_mlp_dec"]), dec_heads=int(m["num_heads_dec"]),
        max_seq_len=int(m["max_seq_len"]), dropout=float(m.get("drop_units", 0.1)),
        drop_path=float(m.get("drop_path", 0.1)), attn_dropout=float(m.get("drop_att", 0.0)), vocab=vocab)


@dataclass(frozen=True)
class _Rule:
    """Our ``key`` <- ``convert(*[tf tensors of tf_keys])``; ``tf_shapes`` are what the config implies."""

    key: str
    tf_keys: tuple[str, ...]
    tf_shapes: tuple[tuple[int, ...], ...]
    convert: Callable[..., np.ndarray]


def _identity(x):
    return x


def _transpose(x):
    return x.T


def _conv(x):
    return x.transpose(3, 2, 0, 1)


def _heads_in(x):
    return x.reshape(x.shape[0], -1).T if x.ndim == 3 else x.reshape(-1)


def _heads_out(x):
    return x.reshape(-1, x.shape[-1]).T


def _concat_heads_in(q, k, v):
    return np.concatenate([_heads_in(q), _heads_in(k), _heads_in(v)], axis=0)


def _ln(rules, ours, tf, dim):
    rules.append(_Rule(f"{ours}.weight", (f"{tf}/gamma",), ((dim,),), _identity))
    rules.append(_Rule(f"{ours}.bias", (f"{tf}/beta",), ((dim,),), _identity))


def _dense(rules, ours, tf, d_in, d_out):
    rules.append(_Rule(f"{ours}.weight", (f"{tf}/kernel",), ((d_in, d_out),), _transpose))
    rules.append(_Rule(f"{ours}.bias", (f"{tf}/bias",), ((d_out,),), _identity))


def _mlp_block(rules, ours_norm, ours_mlp, tf, dim, hidden):
    _ln(rules, ours_norm, f"{tf}/layernorms/0", dim)
    _dense(rules, f"{ours_mlp}.fc1", f"{tf}/mlp_layers/0/dense1", dim, hidden)
    _dense(rules, f"{ours_mlp}.fc2", f"{tf}/mlp_layers/0/dense2", hidden, dim)


def _mha_separate(rules, ours, tf, dim, heads):
    k = dim // heads
    for name, tf_name in (("q_proj", "_query_dense"), ("k_proj", "_key_dense"), ("v_proj", "_value_dense")):
        rules.append(_Rule(f"{ours}.{name}.weight", (f"{tf}/{tf_name}/kernel",), ((dim, heads, k),), _heads_in))
        rules.append(_Rule(f"{ours}.{name}.bias", (f"{tf}/{tf_name}/bias",), ((heads, k),), _heads_in))
    rules.append(_Rule(f"{ours}.out_proj.weight", (f"{tf}/_output_dense/kernel",), ((heads, k, dim),), _heads_out))
    rules.append(_Rule(f"{ours}.out_proj.bias", (f"{tf}/_output_dense/bias",), ((dim,),), _identity))


def _mha_fused(rules, ours, tf, dim, heads):
    k = dim // heads
    names = ("_query_dense", "_key_dense", "_value_dense")
    rules.append(_Rule(f"{ours}.qkv.weight", tuple(f"{tf}/{n}/kernel" for n in names),
                       ((dim, heads, k),) * 3, _concat_heads_in))
    rules.append(_Rule(f"{ours}.qkv.bias", tuple(f"{tf}/{n}/bias" for n in names), ((heads, k),) * 3,
                       _concat_heads_in))
    rules.append(_Rule(f"{ours}.proj.weight", (f"{tf}/_output_dense/kernel",), ((heads, k, dim),), _heads_out))
    rules.append(_Rule(f"{ours}.proj.bias", (f"{tf}/_output_dense/bias",), ((dim,),), _identity))


def tf_key_rules(config: ModelConfig) -> list[_Rule]:
    """Every state-dict key of ``Pix2Seq(config)`` (ViT encoder) with its TF source keys and shapes."""
    if config.encoder != "vit":
        raise ValueError("tf_key_rules: only ViT encoders have a TF key mapping")
    de, dd, p = config.enc_dim, config.dec_dim, config.patch_size
    rules: list[_Rule] = []
    enc = "model/encoder"
    rules.append(_Rule("encoder.patch_embed.proj.weight", (f"{enc}/stem_conv/kernel",), ((p, p, 3, de),), _conv))
    rules.append(_Rule("encoder.patch_embed.proj.bias", (f"{enc}/stem_conv/bias",), ((de,),), _identity))
    _ln(rules, "encoder.patch_embed.norm", f"{enc}/stem_ln", de)
    for i in range(config.enc_layers):
        tf = f"{enc}/transformer_encoder/enc_layers/{i}"
        ours = f"encoder.blocks.{i}"
        _ln(rules, f"{ours}.norm1", f"{tf}/mha_ln", de)
        _mha_fused(rules, f"{ours}.attn", f"{tf}/mha", de, config.enc_heads)
        _mlp_block(rules, f"{ours}.norm2", f"{ours}.mlp", f"{tf}/mlp", de, config.enc_mlp)
    _ln(rules, "encoder.norm", f"{enc}/output_ln", de)
    _dense(rules, "projection.linear", "model/proj", de, dd)
    _ln(rules, "projection.norm", "model/proj_ln", dd)
    _mlp_block(rules, "projection.mlp.norm", "projection.mlp.mlp", "model/proj_mlp", dd, config.proj_mlp_hidden)
    dec = "model/decoder"
    v = config.vocab_size
    rules.append(_Rule("decoder.token_embedding.weight", (f"{dec}/ar_decoder.Stoken_embedding",), ((v, dd),),
                       _identity))
    rules.append(_Rule("decoder.pos_embedding", (f"{dec}/ar_decoder.Sseq_pos_embedding",),
                       ((config.max_seq_len, dd),), _identity))
    rules.append(_Rule("decoder.output_bias", (f"{dec}/ar_decoder.Soutp_bias",), ((v,),), _identity))
    for i in range(config.dec_layers):
        tf = f"{dec}/decoder/dec_layers/{i}"
        ours = f"decoder.layers.{i}"
        _ln(rules, f"{ours}.self_norm", f"{tf}/self_ln", dd)
        _mha_separate(rules, f"{ours}.self_attn", f"{tf}/self_mha", dd, config.dec_heads)
        _ln(rules, f"{ours}.cross_norm", f"{tf}/cross_ln", dd)
        _mha_separate(rules, f"{ours}.cross_attn", f"{tf}/cross_mha", dd, config.dec_heads)
        _mlp_block(rules, f"{ours}.mlp.norm", f"{ours}.mlp.mlp", f"{tf}/mlp", dd, config.dec_mlp)
    _ln(rules, "decoder.norm", f"{dec}/output_ln", dd)
    return rules


def is_model_tensor_key(key: str) -> bool:
    """True for the checkpoint's model variables; False for optimizer slots, counters, the object graph."""
    key = key[: -len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key
    return key.startswith("model/") and OPTIMIZER_SLOT not in key and "/.ATTRIBUTES/" not in key


def map_tf_weights(tf_tensors: dict, config: ModelConfig) -> dict[str, torch.Tensor]:
    """``{tf key: array}`` -> our state dict (float32 tensors) for ``Pix2Seq(config)``.

    Non-model entries (optimizer slots, ``global_step``, ``save_counter``…) are skipped. Raises
    ``ValueError`` naming every unmapped or missing model key and every shape that disagrees.
    """
    if not isinstance(tf_tensors, dict):
        raise ValueError(f"map_tf_weights: tf_tensors must be a dict, got {type(tf_tensors).__name__}")
    model_tensors = {}
    for key, value in tf_tensors.items():
        if not is_model_tensor_key(key):
            continue
        short = key[: -len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key
        model_tensors[short] = np.asarray(value)
    rules = tf_key_rules(config)
    expected = {k: s for r in rules for k, s in zip(r.tf_keys, r.tf_shapes)}
    problems = state_problems(expected, {k: v.shape for k, v in model_tensors.items()},
                              missing="missing checkpoint tensors", unexpected="unmapped checkpoint tensors",
                              against="config")
    if problems:
        raise ValueError("map_tf_weights: " + "; ".join(problems))
    state = {}
    for rule in rules:
        arrays = [model_tensors[k].astype(np.float32, copy=False) for k in rule.tf_keys]
        state[rule.key] = torch.from_numpy(np.ascontiguousarray(rule.convert(*arrays)))
    return state

#!/usr/bin/env python3
"""Make the tiny random-weight Llama-family models under tests/data/models/ and their goldens.

Each model: build with transformers (seeded), overwrite every parameter with a deliberately
"loud" random init (so RMSNorm weights, biases and attention patterns matter), save with
save_pretrained, RELOAD FROM DISK with dtype=torch.float32 and attn_implementation="eager"
(so f16/bf16 files are upcast exactly as stored), and compute the goldens from the reloaded
model.

golden.json:
  input_ids    64 seeded random ids in [0, vocab)
  logprobs     63 floats: log p(ids[t+1] | ids[..=t]), t = 0..62  (log_softmax in float64 of
               the model's f32 logits)
  logits_first vocab floats: f32 logits at position 0
  logits_last  vocab floats: f32 logits at position 63
  input_ids_2 / logprobs_2 / logits_last_2: a second sequence of 17 ids (different seed)
  plus versions, dtype_in_file, architecture, rope inv_freq actually used (rope_inv_freq).

usage: python scripts/golden/make_tiny_models.py [--out tests/data/models] [--only NAME ...]
"""
import argparse
import json
import math
import os

import safetensors
import torch
import transformers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

W_STD = 0.15       # std of every matrix (embeddings, projections, lm_head)
NORM_STD = 0.1     # RMSNorm weights: 1 + NORM_STD * randn
BIAS_STD = 0.1     # biases: BIAS_STD * randn

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    initializer_range=W_STD,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def variants():
    # name -> (model class, config, dtype in file, save kwargs)
    return {
        "llama3-rope": (LlamaForCausalLM, LlamaConfig(
            **COMMON, tie_word_embeddings=True, rope_parameters=dict(LLAMA3_ROPE)),
            torch.float32, {}),
        "mistral": (MistralForCausalLM, MistralConfig(
            **COMMON, tie_word_embeddings=False, sliding_window=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            torch.float32, {}),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(
            **COMMON, tie_word_embeddings=True, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
            torch.float32, {}),
        "qwen3": (Qwen3ForCausalLM, Qwen3Config(
            **COMMON, head_dim=32, tie_word_embeddings=False, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
            torch.float32, {}),
        "llama-f16": (LlamaForCausalLM, LlamaConfig(
            **COMMON, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            torch.float16, {}),
        "llama-bf16": (LlamaForCausalLM, LlamaConfig(
            **COMMON, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            torch.bfloat16, {}),
        "llama-sharded": (LlamaForCausalLM, LlamaConfig(
            **COMMON, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            torch.float32, {"max_shard_size": "150KB"}),
        "llama-bias": (LlamaForCausalLM, LlamaConfig(
            **COMMON, tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            torch.float32, {}),
    }


SEEDS = {name: 1000 + i for i, name in enumerate(
    ["llama3-rope", "mistral", "qwen2", "qwen3", "llama-f16", "llama-bf16", "llama-sharded",
     "llama-bias"])}


def loud_init(model, gen):
    """Overwrite every (deduplicated, so ties survive) parameter in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(BIAS_STD * torch.randn(p.shape, generator=gen))
            elif "norm" in name:  # input/post_attention/final norm, q_norm, k_norm
                p.copy_(1.0 + NORM_STD * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(W_STD * torch.randn(p.shape, generator=gen))


def llama3_bands(cfg):
    rp = cfg.rope_parameters
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    wl = 2 * math.pi / inv
    lo = rp["original_max_position_embeddings"] / rp["low_freq_factor"]
    hi = rp["original_max_position_embeddings"] / rp["high_freq_factor"]
    bands = ["high(kept)" if w < hi else "low(/factor)" if w > lo else "medium(smoothed)"
             for w in wl.tolist()]
    return [round(w, 3) for w in wl.tolist()], bands


def forward_logits(model, ids):
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


def logprobs_of(logits, ids):
    lp = torch.log_softmax(logits.double(), dim=-1)
    return lp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1).tolist()


def make(name, out_root):
    cls, cfg, file_dtype, save_kw = variants()[name]
    seed = SEEDS[name]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg.architectures = [cls.__name__]
    model = cls(cfg).eval()
    loud_init(model, gen)
    ref_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    d = os.path.join(out_root, name)
    # remove only what this script writes (stale shards included); other files in the folder
    # (e.g. llama3-rope/tokenizer.json from make_tiny_tokenizer.py) are kept
    if os.path.isdir(d):
        for f in os.listdir(d):
            if f.endswith(".safetensors") or f in (
                    "model.safetensors.index.json", "config.json", "golden.json",
                    "generation_config.json"):
                os.remove(os.path.join(d, f))
    model.to(file_dtype).save_pretrained(d, **save_kw)
    gc = os.path.join(d, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)  # not needed; keeps the folder to config + weights + golden

    # reload from disk, f32 compute, eager attention
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    assert type(m) is cls, type(m)
    # sanity: reloaded weights == what we wrote, rounded through the file dtype
    st = m.state_dict()
    for k, v in ref_state.items():
        want = v.to(file_dtype).float()
        assert torch.equal(st[k], want), f"{name}: {k} differs after reload"

    # dtype actually in the file(s)
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    dtypes, tensor_names = set(), []
    for f in files:
        with safetensors.safe_open(os.path.join(d, f), "pt") as sf:
            for k in sf.keys():
                dtypes.add(str(sf.get_slice(k).get_dtype()))
                tensor_names.append(k)
    assert len(dtypes) == 1, dtypes

    g1 = torch.Generator().manual_seed(seed * 7 + 1)
    ids = torch.randint(0, cfg.vocab_size, (64,), generator=g1).tolist()
    g2 = torch.Generator().manual_seed(seed * 7 + 2)
    ids2 = torch.randint(0, cfg.vocab_size, (17,), generator=g2).tolist()
    lg = forward_logits(m, ids)
    lg2 = forward_logits(m, ids2)
    # prefix consistency (causality) check of the reference itself
    assert torch.allclose(forward_logits(m, ids[:17]), lg[:17], atol=1e-5)

    rotary = m.model.rotary_emb
    golden = {
        "architecture": cls.__name__,
        "dtype_in_file": dtypes.pop(),
        "files": files,
        "tensor_names": sorted(tensor_names),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "compute": "float32, attn_implementation=eager, reloaded from this folder; logprobs = log_softmax in float64 of the f32 logits",
        "seed": seed,
        "init": {"matrices_std": W_STD, "norm_weights": f"1 + {NORM_STD}*randn", "biases_std": BIAS_STD},
        "rope_inv_freq": rotary.inv_freq.tolist(),
        "rope_attention_scaling": float(rotary.attention_scaling),
        "input_ids": ids,
        "logprobs": logprobs_of(lg, ids),
        "logits_first": lg[0].tolist(),
        "logits_last": lg[-1].tolist(),
        "input_ids_2": ids2,
        "logprobs_2": logprobs_of(lg2, ids2),
        "logits_last_2": lg2[-1].tolist(),
    }
    if name == "llama3-rope":
        golden["llama3_wavelengths"], golden["llama3_bands"] = llama3_bands(cfg)
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    lp = torch.tensor(golden["logprobs"])
    print(f"{name:14s} {cls.__name__:20s} file={golden['dtype_in_file']:8s} files={len(files)} "
          f"size={size/1024:.0f}KB  mean logprob={lp.mean():.3f} (uniform {-math.log(cfg.vocab_size):.3f}) "
          f"logit std={lg.std():.3f}")
    return golden


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "data", "models"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    for name in variants():
        if args.only and name not in args.only:
            continue
        make(name, os.path.normpath(args.out))


if __name__ == "__main__":
    main()

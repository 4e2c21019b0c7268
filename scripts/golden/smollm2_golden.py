#!/usr/bin/env python3
"""Golden numbers of the real SmolLM2-135M-Instruct fixture (transformers + torch, CPU, f32).

Writes tests/data/smollm2/golden.json. Every perplexity protocol runs in its OWN child process
(`--only a|b|paper_a`), so each wall-clock time and peak RSS (ru_maxrss) is that protocol's
alone (model load + tokenize + forwards); the parent does the tokenizer goldens and
logprobs_512 and merges.

Protocols (text = eval.txt, tokenized with add_special_tokens=False; this tokenizer adds no BOS
either way):
  a        ids = tokens of text[:60000]; seqlen 512; n = len(ids) // 512 non-overlapping windows
           (tail dropped); in each window every token but the first is a target; ppl = exp(mean
           NLL over all targets).  Expected 28.7105, 23 windows, 11,753 targets.
  b        ids = first 20,480 tokens of the WHOLE text's tokens; seqlen 2048; same scoring.
           Expected 24.7084, 10 windows, 20,470 targets.
  paper_a  ids = tokens of text[:60000]; n = len(ids) // 511 windows of 511 text tokens
           (non-overlapping, tail dropped); window w = [BOS] + ids[511w : 511w+511], L = 512
           positions; targets are positions L/2 .. L-1 (= 256..511) predicted from logits at
           positions 255..510, i.e. 256 targets per window; ppl = exp(mean NLL over all targets).

usage: python scripts/golden/smollm2_golden.py [--model DIR] [--text eval.txt] [--out JSON]
       python scripts/golden/smollm2_golden.py --only a|b|paper_a    (prints one JSON object)
       python scripts/golden/smollm2_golden.py --refresh b [a paper_a]  (retime, update --out)
"""
import argparse
import hashlib
import importlib.metadata as md
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HOME = os.path.expanduser("~")
DEF_MODEL = os.path.join(HOME, ".cache/qronos/fixtures/smollm2-135m-instruct")
DEF_TEXT = os.path.join(HOME, ".cache/qronos/fixtures/text/eval.txt")
HERE = os.path.dirname(os.path.abspath(__file__))
DEF_OUT = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "data", "smollm2", "golden.json"))
THREADS = 2


def load(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    return tok, model


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def window_nll(model, x, first_target, also_f32=False):
    """x: 1-D LongTensor of positions; returns the per-target NLL (float64) for targets at
    positions first_target..len(x)-1 (logits at first_target-1..len(x)-2). With also_f32, also
    the NLL from an f32 log_softmax (what eval_ppl.py does), as a second tensor."""
    t0 = time.time()
    with torch.inference_mode():
        logits = model(x.unsqueeze(0)).logits[0].float()
    window_nll.forward_seconds += time.time() - t0
    sel = logits[first_target - 1:-1]
    tgt = x[first_target:].unsqueeze(1)
    nll = -torch.log_softmax(sel.double(), dim=-1).gather(1, tgt).squeeze(1)
    if not also_f32:
        return nll
    return nll, -torch.log_softmax(sel, dim=-1).gather(1, tgt).squeeze(1).double()


window_nll.forward_seconds = 0.0


def run_protocol(which, model_dir, text_path):
    load_before = os.getloadavg()
    t_start = time.time()
    torch.set_num_threads(THREADS)
    tok, model = load(model_dir)
    text = open(text_path, encoding="utf-8").read()
    t_load = time.time() - t_start
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if which == "a":
        ids = torch.tensor(encode(tok, text[:60000]))
        L = 512
        n_win = ids.numel() // L
        windows = [ids[w * L:(w + 1) * L] for w in range(n_win)]
        first_target = 1
        desc = ("text[:60000] tokenized (no special tokens); seqlen 512; non-overlapping windows, tail "
                "dropped; every position but each window's first is a target; ppl = exp(mean NLL)")
    elif which == "b":
        ids = torch.tensor(encode(tok, text))[:20480]
        L = 2048
        n_win = ids.numel() // L
        windows = [ids[w * L:(w + 1) * L] for w in range(n_win)]
        first_target = 1
        desc = ("first 20,480 tokens of the whole text tokenized (no special tokens); seqlen 2048; "
                "non-overlapping windows; every position but each window's first is a target")
    elif which == "paper_a":
        ids = torch.tensor(encode(tok, text[:60000]))
        bos = tok.bos_token_id
        T = 511
        L = T + 1
        n_win = ids.numel() // T
        windows = [torch.cat([torch.tensor([bos]), ids[w * T:(w + 1) * T]]) for w in range(n_win)]
        first_target = L // 2
        desc = (f"text[:60000] tokenized (no special tokens); n = len//511 windows of 511 text tokens "
                f"(non-overlapping, tail dropped); window = [BOS id {bos}] + 511 tokens, L = 512; "
                f"targets at positions L/2..L-1 = 256..511 (logits at 255..510), 256 per window; "
                f"ppl = exp(mean NLL over all targets)")
    else:
        raise SystemExit(f"unknown protocol {which}")
    t_tok = time.time() - t_start - t_load
    nll, nll32, count, per_window = 0.0, 0.0, 0, []
    t0 = time.time()
    window_nll.forward_seconds = 0.0
    for x in windows:
        v, v32 = window_nll(model, x, first_target, also_f32=True)
        nll += v.sum().item()
        nll32 += v32.sum().item()
        count += v.numel()
        per_window.append(math.exp(v.mean().item()))
    t_eval = time.time() - t0
    t_fwd = window_nll.forward_seconds
    return {
        "protocol": which,
        "definition": desc,
        "ppl": math.exp(nll / count),
        "mean_nll": nll / count,
        "ppl_note": "ppl uses log_softmax in float64 of the f32 logits; ppl_f32_log_softmax uses "
                    "an f32 log_softmax (as /work/shared/fixtures/eval_ppl.py), NLL summed in f64",
        "ppl_f32_log_softmax": math.exp(nll32 / count),
        "windows": n_win,
        "seqlen": L,
        "scored_tokens": count,
        "text_tokens_available": int(ids.numel()),
        "ppl_per_window": per_window,
        "forward_seconds": t_fwd,
        "forward_tokens_per_s": n_win * L / t_fwd,
        "forward_note": "forward_seconds = sum over windows of the model(...) call alone (positions "
                        "through the network incl. BOS); eval_seconds adds this harness's log_softmax/gather",
        "eval_seconds": t_eval,
        "load_seconds": t_load,
        "tokenize_seconds": t_tok,
        "threads": torch.get_num_threads(),
        "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "peak_rss_after_load_mib": rss_after_load,
        "peak_rss_note": "ru_maxrss of a child process that ran only this protocol "
                         "(python + torch import, f32 model load, tokenization, forwards); the forwards' share includes "
                         "this harness's f32 logits + f64 and f32 log_softmax copies ([L, 49152] each)",
    }


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_child(which, args):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--only", which,
                        "--model", args.model, "--text", args.text],
                       check=True, capture_output=True, text=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"{which}: ppl={res['ppl']:.4f} windows={res['windows']} scored={res['scored_tokens']} "
          f"fwd={res['forward_seconds']:.1f}s ({res['forward_tokens_per_s']:.0f} tok/s) "
          f"rss={res['peak_rss_mib']:.0f}MiB load={res['loadavg_1min_before_after']}", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEF_MODEL)
    ap.add_argument("--text", default=DEF_TEXT)
    ap.add_argument("--out", default=DEF_OUT)
    ap.add_argument("--only", choices=["a", "b", "paper_a"])
    ap.add_argument("--refresh", nargs="+", choices=["a", "b", "paper_a"],
                    help="rerun only these protocols (each in a child process) and replace their "
                         "entries in the existing --out JSON, e.g. to retime on a quiet machine")
    args = ap.parse_args()
    if args.only:
        print(json.dumps(run_protocol(args.only, args.model, args.text)))
        return
    if args.refresh:
        with open(args.out) as f:
            golden = json.load(f)
        for which in args.refresh:
            golden["ppl"][which] = run_child(which, args)
        golden["ppl_paper_a"] = golden["ppl"]["paper_a"]["ppl"]
        with open(args.out, "w") as f:
            json.dump(golden, f)
        print("updated", args.out)
        return

    torch.set_num_threads(THREADS)
    tok, model = load(args.model)
    text = open(args.text, encoding="utf-8").read()
    ids = encode(tok, text)
    ids_default = tok(text)["input_ids"]
    assert ids_default == ids, "tokenizer adds special tokens by default"
    n60 = len(encode(tok, text[:60000]))
    x = torch.tensor(ids[:512])
    lp512 = (-window_nll(model, x, 1)).tolist()
    assert len(lp512) == 511
    hello = tok("Hello world")["input_ids"]
    hello_nospecial = tok("Hello world", add_special_tokens=False)["input_ids"]
    del model

    golden = {
        "model": "SmolLM2-135M-Instruct fixture (bf16 safetensors from /work/shared/fixtures/fetch_model.sh)",
        "model_sha256": sha256(os.path.join(args.model, "model.safetensors")),
        "text": "eval.txt from /work/shared/fixtures/fetch_text.sh",
        "text_sha256": sha256(args.text),
        "text_chars": len(text),
        "tokenization": "tok(text, add_special_tokens=False); identical to the default call (no BOS/EOS added)",
        "first_ids": ids[:2048],
        "n_tokens_60000_chars": n60,
        "n_tokens_whole": len(ids),
        "logprobs_512": lp512,
        "logprobs_512_definition": "one forward of first_ids[:512]; entry t = log p(ids[t+1] | ids[..=t]), "
                                   "t = 0..510; log_softmax in float64 of the f32 logits",
        "special": {
            "bos_token_id": tok.bos_token_id, "bos_token": tok.bos_token,
            "eos_token_id": tok.eos_token_id, "eos_token": tok.eos_token,
            "pad_token_id": tok.pad_token_id, "unk_token_id": tok.unk_token_id,
        },
        "encode_with_special_hello": hello,
        "encode_without_special_hello": hello_nospecial,
        "compute": "transformers AutoModelForCausalLM, dtype=torch.float32 (bf16 file upcast), "
                   "attn_implementation=eager, CPU, torch.set_num_threads(2)",
        "versions": {p: md.version(p) for p in ("torch", "transformers", "tokenizers", "safetensors")}
                    | {"python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "note": "2-core shared VM; other work (Rust builds) may have been running, "
                            "so timings are indicative only"},
        "ppl": {},
    }
    for which in ("a", "b", "paper_a"):
        golden["ppl"][which] = run_child(which, args)
    golden["ppl_paper_a"] = golden["ppl"]["paper_a"]["ppl"]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(golden, f)
    print("wrote", args.out)


if __name__ == "__main__":
    main()

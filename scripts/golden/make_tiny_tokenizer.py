#!/usr/bin/env python3
"""Write tests/data/models/llama3-rope/tokenizer.json: a byte-level tokenizer whose vocabulary
is exactly the 256 bytes, so it fits the tiny models (vocab_size 256) and `qronos eval` can run
on them end to end.

The model is BPE with NO merges over the GPT-2 ByteLevel alphabet (`bytes_to_unicode`): token
id b is the alphabet character of byte b, so every UTF-8 byte of the text becomes one token
whose id is the byte's value ("Hello" -> [72, 101, 108, 108, 111]). ByteLevel pre-tokenizer
(GPT-2 split regex, no prefix space) and decoder; no normalizer, no post-processor, no special
tokens (config.json's bos_token_id 1 is just byte 0x01).

Run after make_tiny_models.py, which deletes and rewrites the model folders.

usage: python scripts/golden/make_tiny_tokenizer.py [--out tests/data/models/llama3-rope]
"""
import argparse
import json
import os

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/models/llama3-rope")
    args = ap.parse_args()

    alphabet = bytes_to_unicode()
    assert sorted(alphabet.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {alphabet[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()

    # the promises the Rust tests rely on
    assert tok.get_vocab_size() == 256
    text = "Hello, wörld! 👋\n\tdone"
    enc = tok.encode(text)
    assert enc.ids == list(text.encode("utf-8")), enc.ids
    assert tok.decode(enc.ids) == text
    assert tok.encode(text, add_special_tokens=True).ids == enc.ids

    path = os.path.join(args.out, "tokenizer.json")
    # pretty-printed, vocabulary in id order: a stable, diffable file
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(json.loads(tok.to_str()), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path} (tokenizers {tokenizers.__version__})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Perplexity of a plain export (examples/uniform-export.sh, or run
--method nystrom --out-gguf on a Llama-family model) in stock loaders: the Hugging Face directory in transformers
(AutoModelForCausalLM, no custom code) and the GGUF in llama.cpp
(llama-cpp-python). Windows of 512 tokens, the first token of each window
not scored, as `slicegpt-stream ppl --seqlen 512` does; both runs score the
same token ids (the directory's tokenizer.json). Not part of make check.

    python3 examples/uniform-ppl.py HF_DIR FILE.gguf EVAL.txt [SEQLEN]
"""
import math
import sys
import time

import numpy as np


def windows(ids, n):
    return [ids[i:i + n] for i in range(0, len(ids) - 1, n) if len(ids[i:i + n]) > 1]


def nll_of(logits, w):
    # logits (len(w), V) float64; token t+1 scored from position t
    x = logits[:-1]
    m = x.max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(x - m).sum(axis=1)))
    return float((lse - x[np.arange(len(w) - 1), w[1:]]).sum()), len(w) - 1


def main():
    hf, gguf, text_path = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    from tokenizers import Tokenizer
    text = open(text_path, encoding="utf-8").read()
    ids = Tokenizer.from_file(hf + "/tokenizer.json").encode(text).ids
    ws = windows(ids, n)

    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    model.eval()
    tot = cnt = 0
    t0 = time.time()
    with torch.no_grad():
        for w in ws:
            out = model(torch.tensor([w])).logits[0].double().numpy()
            a, b = nll_of(out, w)
            tot, cnt = tot + a, cnt + b
    dt = time.time() - t0
    print(f"transformers {model.config.model_type} hidden {model.config.hidden_size}: "
          f"perplexity {math.exp(tot / cnt):.4f} over {cnt} tokens ({cnt / dt:.0f} tokens/s)")

    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_ctx=n, logits_all=True, verbose=False, n_threads=2)
    tot = cnt = 0
    t0 = time.time()
    for w in ws:
        llm.reset()
        llm.eval(w)
        out = np.array(llm.scores[:len(w)], dtype=np.float64)
        a, b = nll_of(out, w)
        tot, cnt = tot + a, cnt + b
    dt = time.time() - t0
    print(f"llama.cpp {gguf}: perplexity {math.exp(tot / cnt):.4f} over {cnt} tokens "
          f"({cnt / dt:.0f} tokens/s)")


if __name__ == "__main__":
    main()

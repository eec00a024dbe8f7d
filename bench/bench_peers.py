"""One engine scores the given windows of token ids; bench_peers.sh runs it.

    python bench_peers.py torch|llama MODEL_F32.gguf IDS_FILE WINDOWS SEQLEN THREADS

Prints one line: "<engine> tokens/s <rate> perplexity <ppl> tokens <n>", with
the rate over the forward passes only (model loading excluded), every token
of every window counted as slicegpt-stream ppl counts them, and the
perplexity over the next-token predictions inside each window (SEQLEN - 1 per
window), as slicegpt-stream ppl scores them.
"""
import math
import os
import sys
import time

import numpy as np


def nll_of(logits, ids):
    """Summed next-token NLL of ids (n,) under logits (n, V), in float64."""
    x = logits[:-1].astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return float((lse - x[np.arange(len(ids) - 1), ids[1:]]).sum())


def main():
    engine, model, ids_file, windows, seqlen, threads = sys.argv[1:7]
    windows, seqlen, threads = int(windows), int(seqlen), int(threads)
    ids = np.loadtxt(ids_file, dtype=np.int64)
    wins = [ids[w * seqlen:(w + 1) * seqlen] for w in range(windows)]
    nll, count, seconds = 0.0, 0, 0.0
    if engine == "torch":
        import torch
        from transformers import AutoModelForCausalLM
        torch.set_num_threads(threads)
        m = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(os.path.abspath(model)), gguf_file=os.path.basename(model),
            dtype=torch.float32)
        m.eval()
        with torch.inference_mode():
            for w in wins:
                t0 = time.perf_counter()
                logits = m(torch.from_numpy(w)[None]).logits[0]
                seconds += time.perf_counter() - t0
                nll += nll_of(logits.numpy(), w)
                count += len(w) - 1
    elif engine == "llama":
        from llama_cpp import Llama
        m = Llama(model_path=model, n_ctx=seqlen, n_batch=seqlen, n_ubatch=seqlen,
                  n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False)
        for w in wins:
            m.reset()
            t0 = time.perf_counter()
            m.eval(w.tolist())
            seconds += time.perf_counter() - t0
            nll += nll_of(np.asarray(m.scores[:len(w)], dtype=np.float32), w)
            count += len(w) - 1
    else:
        sys.exit("engine: torch or llama")
    print(f"{engine} tokens/s {windows * seqlen / seconds:.1f} perplexity "
          f"{math.exp(nll / count):.4f} tokens {windows * seqlen}", flush=True)


if __name__ == "__main__":
    main()

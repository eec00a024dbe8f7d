"""SliceGPT in plain PyTorch, the reference bench_slice_peers.sh times.

    python bench_slice_peers.py MODEL_F32.gguf CALIB_IDS SPARSITY THREADS [ROUND]

The same computation `slicegpt-stream run` does on the CPU, written the
way the SliceGPT reference code does it (Ashkboos et al., slicegpt/
rotate.py): RMSNorm scales folded into the linear layers that read them;
the embeddings' PCA; then per layer: attention inputs rotated and cut,
the attention half run on the calibration windows, its residual stream's
PCA, attention output and MLP input rotated and cut, the MLP half run, the
block output's PCA, MLP output rotated and cut, shortcut matrices, the
next layer's inputs projected; the head rotated last. Activations and
forward passes in float32, covariances (X.double()ᵀX.double()), the
damped eigendecomposition (torch.linalg.eigh) and the weight rotations in
float64, as the reference does. CALIB_IDS holds one window per line (the
windows `run --calib` samples, from tools/sg-gguf-f32 --calib).

Prints "torch slice seconds S capture C covariance V eigensolve E rotate R"
with the model load excluded, then, as a check that the sliced network is
a SliceGPT one, the perplexity of the dense and sliced models on the first
calibration window (not part of the timing). With SPARSITY 0 the two agree
to float32 rounding (computational invariance).
"""
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def rms(x, dim, eps):
    """Scale-free RMSNorm over the model's original width dim."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) / dim + eps)


def rope_tables(n, hd, theta):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
    return x * cos + rot * sin


class Timer:
    def __init__(self):
        self.t = {k: 0.0 for k in ("capture", "covariance", "eigensolve", "rotate")}
        self.last = time.perf_counter()

    def tick(self, what):
        now = time.perf_counter()
        self.t[what] += now - self.last
        self.last = now


def pca(h, damp=0.01):
    """Eigenvectors of H + damp·mean(diag H)·I, largest eigenvalue first."""
    h = h + damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    w, q = torch.linalg.eigh(h)
    return q[:, torch.argsort(w, descending=True)]


def main():
    model, ids_file, sparsity, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(model)), gguf_file=os.path.basename(model),
        dtype=torch.float32)
    m.eval()
    c = m.config
    D, nh, nkv = c.hidden_size, c.num_attention_heads, c.num_key_value_heads
    hd, eps = D // nh, c.rms_norm_eps
    d = int((1 - sparsity) * D) // 8 * 8
    ids = torch.from_numpy(np.loadtxt(ids_file, dtype=np.int64, ndmin=2))
    n_win, n = ids.shape
    theta = getattr(c, "rope_theta", None) or (getattr(c, "rope_parameters", None) or {}).get(
        "rope_theta", 10000.0)
    cos, sin = rope_tables(n, hd, theta)
    batch = 8  # windows per forward group (4096 tokens, as slicegpt-stream groups them)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    emb = sd["model.embed_tokens.weight"]
    head = sd.get("lm_head.weight", emb)
    L = c.num_hidden_layers
    # dense copies for the check afterwards
    dense = {k: v for k, v in sd.items()}

    t = Timer()
    with torch.inference_mode():
        # fold the RMSNorm scales into the readers
        layers = []
        for l in range(L):
            p = f"model.layers.{l}."
            a, f = sd[p + "input_layernorm.weight"], sd[p + "post_attention_layernorm.weight"]
            layers.append({
                "q": sd[p + "self_attn.q_proj.weight"] * a, "k": sd[p + "self_attn.k_proj.weight"] * a,
                "v": sd[p + "self_attn.v_proj.weight"] * a, "o": sd[p + "self_attn.o_proj.weight"],
                "gate": sd[p + "mlp.gate_proj.weight"] * f, "up": sd[p + "mlp.up_proj.weight"] * f,
                "down": sd[p + "mlp.down_proj.weight"]})
        head = head * sd["model.norm.weight"]
        t.tick("rotate")

        # embeddings
        x = emb[ids.reshape(-1)]                                      # (T, D)
        t.tick("capture")
        h64 = x.double().T @ x.double()
        t.tick("covariance")
        q = pca(h64)
        t.tick("eigensolve")
        qd = q[:, :d]
        emb_s = (emb.double() @ qd).float()
        x = (x.double() @ qd).float()                                # (T, d)
        t.tick("rotate")

        def attention(h, w):
            T = h.shape[0]
            qq = (h @ w["q"].T).view(T // n, n, nh, hd).transpose(1, 2)
            kk = (h @ w["k"].T).view(T // n, n, nkv, hd).transpose(1, 2)
            vv = (h @ w["v"].T).view(T // n, n, nkv, hd).transpose(1, 2)
            qq, kk = rope(qq, cos, sin), rope(kk, cos, sin)
            kk = kk.repeat_interleave(nh // nkv, dim=1)
            vv = vv.repeat_interleave(nh // nkv, dim=1)
            o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
            return o.transpose(1, 2).reshape(T, nh * hd)

        def mlp(h, w):
            return (F.silu(h @ w["gate"].T) * (h @ w["up"].T)) @ w["down"].T

        for l in range(L):
            w = layers[l]
            # attention inputs in the current basis, cut to d
            for k in ("q", "k", "v"):
                w[k] = (w[k].double() @ qd).float()
            s_in = qd.T.float()                                      # (d, D): back to the original basis
            t.tick("rotate")
            mid = torch.empty(x.shape[0], D)
            for b0 in range(0, n_win, batch):
                r = slice(b0 * n, min(n_win, b0 + batch) * n)
                xi = x[r]
                mid[r] = xi @ s_in + attention(rms(xi, D, eps), w) @ w["o"].T
            t.tick("capture")
            h64 = mid.double().T @ mid.double()
            t.tick("covariance")
            q_mid = pca(h64)
            t.tick("eigensolve")
            qm = q_mid[:, :d]
            w["s_attn"] = (qd.T @ qm).float()                        # (d, d)
            w["o"] = (qm.T @ w["o"].double()).float()                # (d, nh·hd)
            w["gate"] = (w["gate"].double() @ qm).float()
            w["up"] = (w["up"].double() @ qm).float()
            xm = (mid.double() @ qm).float()                         # (T, d)
            t.tick("rotate")
            out = torch.empty(x.shape[0], D)
            for b0 in range(0, x.shape[0], batch * n):
                r = slice(b0, b0 + batch * n)
                out[r] = xm[r] @ qm.T.float() + mlp(rms(xm[r], D, eps), w)
            t.tick("capture")
            h64 = out.double().T @ out.double()
            t.tick("covariance")
            q_out = pca(h64)
            t.tick("eigensolve")
            qo = q_out[:, :d]
            w["s_mlp"] = (qm.T @ qo).float()
            w["down"] = (qo.T @ w["down"].double()).float()
            x = (out.double() @ qo).float()
            qd = qo
            t.tick("rotate")
        head_s = (head.double() @ qd).float()
        t.tick("rotate")
    total = sum(t.t.values())
    print(f"torch slice seconds {total:.2f} " +
          " ".join(f"{k} {v:.2f}" for k, v in t.t.items()), flush=True)

    # check: perplexity of the first window, dense (HF) and sliced (ours)
    with torch.inference_mode():
        w0 = ids[:1]
        logits = m(w0).logits[0]
        dense_nll = F.cross_entropy(logits[:-1], w0[0, 1:]).item()
        x = emb_s[w0[0]]
        for w in layers:
            r = x @ w["s_attn"] + attention(rms(x, D, eps), w) @ w["o"].T
            x = r @ w["s_mlp"] + mlp(rms(r, D, eps), w)
        logits = rms(x, D, eps) @ head_s.T
        sliced_nll = F.cross_entropy(logits[:-1], w0[0, 1:]).item()
    print(f"check: first window perplexity dense {math.exp(dense_nll):.4f} "
          f"sliced to d = {d} of {D}: {math.exp(sliced_nll):.4f}", flush=True)


if __name__ == "__main__":
    main()

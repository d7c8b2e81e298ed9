"""Independent NumPy reference for wflora-lora's BERT text encoder.

Written from the BERT definition (Devlin et al. 2019; Hugging Face
`BertModel` naming), not from our Rust code: embeddings (word + position +
segment 0, LayerNorm), post-norm blocks (x = LN(x + attn(x)), x = LN(x +
mlp(x))) with exact-erf GELU, no attention mask, then mean pooling.

Usage (NumPy only; the safetensors format is written and read by hand):

    python3 bert_reference.py tiny  OUT_DIR
        writes OUT_DIR/{config.json, model.safetensors, expected.json}: a
        random 2-block BERT and the reference outputs for fixed id sequences
        (the fixture of crates/lora/tests/integration/bert.rs).

    python3 bert_reference.py model MODEL_DIR OUT_JSON
        evaluates a real checkpoint (e.g. all-MiniLM-L6-v2) on fixed id
        sequences and writes the mean-pooled outputs (the reference that
        `wflora assets fetch` checks our forward pass against:
        experiments/src/minilm-l6-reference.json).
"""

import json
import math
import struct
import sys

import numpy as np

ERF = np.vectorize(math.erf)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        out[name] = np.frombuffer(data[a:b], dtype=dt).reshape(meta["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def layer_norm(x, w, b, eps):
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + ERF(x / math.sqrt(2.0)))


def linear(x, t, name):
    return x @ t[name + ".weight"].astype(np.float64).T + t[name + ".bias"]


def bert_forward(t, cfg, ids):
    """last_hidden_state (L, D) of one sequence of ids."""
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    L = len(ids)
    x = (
        t["embeddings.word_embeddings.weight"][ids].astype(np.float64)
        + t["embeddings.position_embeddings.weight"][:L]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    D = x.shape[1]
    hd = D // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = linear(x, t, p + "attention.self.query").reshape(L, heads, hd).transpose(1, 0, 2)
        k = linear(x, t, p + "attention.self.key").reshape(L, heads, hd).transpose(1, 0, 2)
        v = linear(x, t, p + "attention.self.value").reshape(L, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(L, D)
        a = linear(ctx, t, p + "attention.output.dense")
        x = layer_norm(x + a, t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"], eps)
        m = linear(gelu(linear(x, t, p + "intermediate.dense")), t, p + "output.dense")
        x = layer_norm(x + m, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    return x


def tiny(out_dir):
    rng = np.random.default_rng(20261123)
    cfg = {
        "architectures": ["BertModel"],
        "hidden_size": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "vocab_size": 50,
        "max_position_embeddings": 16,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        "model_type": "bert",
    }
    D, M = 8, 16
    t = {
        "embeddings.word_embeddings.weight": rng.normal(0, 1, (50, D)),
        "embeddings.position_embeddings.weight": rng.normal(0, 1, (16, D)),
        "embeddings.token_type_embeddings.weight": rng.normal(0, 1, (2, D)),
        "embeddings.LayerNorm.weight": rng.uniform(0.5, 1.5, D),
        "embeddings.LayerNorm.bias": rng.normal(0, 0.1, D),
    }
    for i in range(2):
        p = f"encoder.layer.{i}."
        for n, (o, k) in {
            "attention.self.query": (D, D),
            "attention.self.key": (D, D),
            "attention.self.value": (D, D),
            "attention.output.dense": (D, D),
            "intermediate.dense": (M, D),
            "output.dense": (D, M),
        }.items():
            t[p + n + ".weight"] = rng.normal(0, 1 / math.sqrt(k), (o, k))
            t[p + n + ".bias"] = rng.normal(0, 0.1, o)
        for n in ["attention.output.LayerNorm", "output.LayerNorm"]:
            t[p + n + ".weight"] = rng.uniform(0.5, 1.5, D)
            t[p + n + ".bias"] = rng.normal(0, 0.1, D)
    t["pooler.dense.weight"] = rng.normal(0, 1, (D, D))
    t["pooler.dense.bias"] = np.zeros(D)
    t = {k: v.astype(np.float32) for k, v in t.items()}
    write_safetensors(f"{out_dir}/model.safetensors", t)
    with open(f"{out_dir}/config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    seqs = [[2, 17, 33, 5, 49, 3], [2, 0, 0, 41, 8, 3]]
    exp = {
        "reference": "crates/lora/tests/reference/bert_reference.py tiny (NumPy, float64)",
        "ids": seqs,
        "last_hidden_state": [bert_forward(t, cfg, s).tolist() for s in seqs],
        "mean_pooled": [bert_forward(t, cfg, s).mean(0).tolist() for s in seqs],
    }
    with open(f"{out_dir}/expected.json", "w") as f:
        json.dump(exp, f, indent=1)


# Fixed id sequences for the real-checkpoint check: bert-base-uncased
# vocabulary ids of "[CLS] hello world [SEP]" and of "[CLS] the quick brown
# fox jumps over the lazy dog [SEP]".
MODEL_SEQS = [
    [101, 7592, 2088, 102],
    [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 102],
]


def model(model_dir, out_json):
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    t = read_safetensors(f"{model_dir}/model.safetensors")
    exp = {
        "reference": "crates/lora/tests/reference/bert_reference.py model (NumPy, float64)",
        "ids": MODEL_SEQS,
        "mean_pooled": [bert_forward(t, cfg, s).mean(0).tolist() for s in MODEL_SEQS],
    }
    with open(out_json, "w") as f:
        json.dump(exp, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "tiny":
        tiny(sys.argv[2])
    else:
        model(sys.argv[2], sys.argv[3])

#!/usr/bin/env python3
"""Side-by-side training-step benchmark: wflora (Rust, candle) against a
PyTorch reference of the same workload, timed alternately in one run.

Workload (both sides): a pre-norm ViT of the named shape (separate q, k, v, o
projections with bias, exact GELU, CLS token, learned position embeddings,
final LayerNorm on the CLS token, 10-class head), LoRA of rank 16 (alpha 32)
on q and v with B = 0 at the start, frozen backbone, AdamW on the LoRA factors
and the head; forward + backward + optimiser step on a fixed random batch.

    python3 bench/peer.py [--threads 2] [--shapes tiny,vit-s14,vit-b16] [--rounds 2]
                          [--parallel shards|intra-op|both] [--phases] [--out F [--replace]]

With --threads N > 1 on the CPU our side splits each batch into N shards
trained on their own threads (TrainOptions::shards, one candle thread each;
the default) or, with --parallel intra-op, runs one thread with candle's
matmul pool at N threads; PyTorch always uses its intra-op pool
(torch.set_num_threads(N)).

`just bench-peer` installs PyTorch into .venv-peer and runs this. The Rust
side is `cargo bench -p wflora-lora --bench peer` (built once here, then run
as a subprocess between PyTorch runs). Prints a table and writes
bench/results/peer.json (an existing file only with --replace). Ratio > 1
means wflora is faster: the ratio of the two sides' medians, and the ratios
of the runs paired by round (their median, range and sign count).

On a GPU (`--device cuda`): the Rust side is a prebuilt binary
(`just build-cuda` makes target-cuda/peer-cuda; pass it with --wflora-bin),
both sides synchronise the device around each timed run, `--dtypes f32,bf16`
runs each dtype (PyTorch: bf16 autocast with f32 master weights; wflora: the
frozen backbone in bf16 with f32 LoRA factors and head, LayerNorm, softmax
and loss in f32), `--batch` overrides the shape's batch and `--check` makes
the Rust binary first compare its device training against its CPU training.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (image, channels, patch, width, depth, heads, mlp, layer_scale, ln_eps): the
# presets of crates/lora/src/config.rs.
PRESETS = {
    "tiny": (28, 1, 7, 64, 4, 4, 128, None, 1e-6),
    "vit-s14": (224, 3, 14, 384, 12, 6, 1536, 1.0, 1e-6),
    "vit-b16": (224, 3, 16, 768, 12, 12, 3072, None, 1e-12),
}
# The shapes the issue names: (preset, image side, batch, steps per run, runs).
SHAPES = {
    "tiny": ("tiny", 28, 32, 10, 7),
    "vit-s14": ("vit-s14", 56, 32, 2, 5),
    "vit-b16": ("vit-b16", 224, 8, 1, 3),
}
RANK, ALPHA, CLASSES = 16, 32.0, 10


def torch_side(shape, threads, device="cpu", dtype="f32", batch=None, phases=False):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    preset, image, shape_batch, steps, runs = SHAPES[shape]
    batch = batch or shape_batch
    if device == "cuda":
        # enough work per timed run for the GPU's launch overheads to amortise
        steps, runs = max(steps, 10), max(runs, 5)
    _, chans, patch, width, depth, heads, mlp, ls, eps = PRESETS[preset]

    class LoraLinear(nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.base = nn.Linear(d_in, d_out)
            self.base.requires_grad_(False)
            self.a = nn.Parameter(torch.empty(RANK, d_in).uniform_(-1 / math.sqrt(d_in), 1 / math.sqrt(d_in)))
            self.b = nn.Parameter(torch.zeros(d_out, RANK))
            self.scale = ALPHA / RANK

        def forward(self, x):
            return self.base(x) + self.scale * F.linear(F.linear(x, self.a), self.b)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1 = nn.LayerNorm(width, eps=eps)
            self.q = LoraLinear(width, width)
            self.k = nn.Linear(width, width)
            self.v = LoraLinear(width, width)
            self.o = nn.Linear(width, width)
            self.n2 = nn.LayerNorm(width, eps=eps)
            self.fc1 = nn.Linear(width, mlp)
            self.fc2 = nn.Linear(mlp, width)
            self.ls1 = nn.Parameter(torch.full((width,), ls)) if ls else None
            self.ls2 = nn.Parameter(torch.full((width,), ls)) if ls else None

        def forward(self, x):
            b, t, d = x.shape
            h = self.n1(x)
            split = lambda y: y.view(b, t, heads, d // heads).transpose(1, 2)
            q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
            att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)
            y = self.o((att @ v).transpose(1, 2).reshape(b, t, d))
            x = x + (y * self.ls1 if self.ls1 is not None else y)
            y = self.fc2(F.gelu(self.fc1(self.n2(x))))
            return x + (y * self.ls2 if self.ls2 is not None else y)

    class Vit(nn.Module):
        def __init__(self):
            super().__init__()
            n = (image // patch) ** 2
            self.embed = nn.Linear(chans * patch * patch, width)
            self.cls = nn.Parameter(torch.zeros(1, 1, width))
            self.pos = nn.Parameter(torch.randn(1, n + 1, width) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.norm = nn.LayerNorm(width, eps=eps)
            self.head = nn.Linear(width, CLASSES)

        def forward(self, img):
            b = img.shape[0]
            p = img.unfold(2, patch, patch).unfold(3, patch, patch)
            p = p.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, chans * patch * patch)
            x = torch.cat([self.cls.expand(b, -1, -1), self.embed(p)], 1) + self.pos
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.norm(x[:, 0]))

    model = Vit().to(device)
    for name, prm in model.named_parameters():
        prm.requires_grad_(name.endswith(".a") or name.endswith(".b") or name.startswith("head."))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    img = (torch.rand(batch, chans, image, image) * 2 - 1).to(device)
    lab = torch.randint(0, CLASSES, (batch,)).to(device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(img), lab)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    rates = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(steps * batch / (time.perf_counter() - t0))
    rates.sort()
    res = {"impl": "pytorch", "torch": torch.__version__, "shape": shape, "image": image,
           "batch": batch, "device": device, "dtype": dtype,
           "img_s_median": statistics.median(rates), "img_s_best": rates[-1]}
    if device == "cuda" or phases:
        # where a step's time goes: forward alone, forward + backward
        def timed(f):
            f()
            ts = []
            for _ in range(5):
                sync()
                t0 = time.perf_counter()
                f()
                sync()
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts) * 1e3

        def fwd():
            with autocast:
                return F.cross_entropy(model(img), lab)

        res["fwd_ms"] = timed(fwd)
        res["fwd_bwd_ms"] = timed(lambda: fwd().backward())
    return res


def rust_binary():
    out = subprocess.run(
        ["cargo", "bench", "-p", "wflora-lora", "--bench", "peer", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "peer" and msg.get("executable"):
            return msg["executable"]
    sys.exit("bench-peer: cargo built no `peer` bench executable")


def rust_side(exe, shape, threads, device="cpu", dtype="f32", batch=None, check=False, parallel="intra-op",
              phases=False):
    preset, image, shape_batch, steps, runs = SHAPES[shape]
    batch = batch or shape_batch
    if device == "cuda":
        steps, runs = max(steps, 10), max(runs, 5)
    # shards: the batch split over `threads` threads, candle's own pool off;
    # intra-op: one thread, candle's pool (its matmuls) at `threads`.
    pool, shards = (1, threads) if parallel == "shards" else (threads, 1)
    env = dict(os.environ, RAYON_NUM_THREADS=str(pool), PEER_SHARDS=str(shards),
               PEER_SHAPE=preset, PEER_IMAGE=str(image),
               PEER_BATCH=str(batch), PEER_STEPS=str(steps), PEER_RUNS=str(runs), PEER_WARMUP="2",
               PEER_DEVICE=device, PEER_DTYPE=dtype, PEER_CHECK="1" if check else "0",
               PEER_PHASES="1" if device == "cuda" or phases else "0",
               GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
                              ":glibc.malloc.arena_max=1")
    proc = subprocess.run([exe], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench-peer: {exe} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    lines = [json.loads(x) for x in proc.stdout.strip().splitlines() if x.startswith("{")]
    for line in lines:
        if "check" in line:
            print(f"device check: {json.dumps(line)}", flush=True)
    res = lines[-1]
    res["shape"] = shape
    if check:
        res["check"] = [x for x in lines if "check" in x]
    return res


def paired(ours, theirs):
    """Ratios of the two sides' runs taken next to each other (round i: ours
    then PyTorch), which cancels the machine's slow drift that the ratio of
    the two medians does not. The range of n such ratios covers the median of
    their distribution with probability 1 - 2^(1-n), whatever it is (order
    statistics: it misses only when all n fall on one side); `wins` counts
    the rounds where ours was faster, and `sign_test_p` is the probability of
    at least that many under a coin toss (the one-sided sign test)."""
    ratios = [o["img_s_median"] / t["img_s_median"] for o, t in zip(ours, theirs)]
    n = len(ratios)
    wins = sum(r > 1.0 for r in ratios)
    return {"ratios": ratios, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "range_coverage": 1.0 - 2.0 ** (1 - n), "wins": wins,
            "sign_test_p": sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default="tiny,vit-s14,vit-b16")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two sides per shape")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtypes", default="f32", help="comma-separated: f32, bf16 (bf16 on cuda only)")
    ap.add_argument("--batch", type=int, default=None, help="override the shape's batch size")
    ap.add_argument("--wflora-bin", default=None, help="a prebuilt peer binary (needed with --device cuda)")
    ap.add_argument("--check", action="store_true", help="the Rust side first checks its device against its CPU")
    ap.add_argument("--parallel", default="shards", choices=["shards", "intra-op", "both"],
                    help="how our side uses --threads on the CPU: the batch split into that many shards on their "
                         "own threads (TrainOptions::shards, candle's pool off), candle's intra-op pool, or both "
                         "(two rows per shape)")
    ap.add_argument("--phases", action="store_true",
                    help="also time a forward pass and a forward + backward pass on each side (always on cuda); "
                         "ours times the whole batch without shards, so compare them at --threads 1")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "peer.json"))
    ap.add_argument("--replace", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args()
    if args.rounds < 1:
        sys.exit(f"bench-peer: --rounds {args.rounds}: expected at least 1")
    if Path(args.out).exists() and not args.replace:
        sys.exit(f"bench-peer: --out {args.out} exists; pass --replace to overwrite it, or another --out")
    shapes = args.shapes.split(",")
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"bench-peer: unknown shape '{s}' (expected one of {', '.join(SHAPES)})")
    dtypes = args.dtypes.split(",")
    for d in dtypes:
        if d not in ("f32", "bf16") or (d == "bf16" and args.device != "cuda"):
            sys.exit(f"bench-peer: --dtypes {d}: expected f32, or bf16 with --device cuda")
    if args.device == "cuda" and not args.wflora_bin:
        sys.exit("bench-peer: --device cuda needs --wflora-bin (built by `just build-cuda`)")
    exe = args.wflora_bin or rust_binary()
    if args.device == "cuda" or args.threads == 1:
        modes = ["intra-op"]
    else:
        modes = ["shards", "intra-op"] if args.parallel == "both" else [args.parallel]
    rows = []
    check = args.check
    for s in shapes:
        for d in dtypes:
            ours = {m: [] for m in modes}
            theirs = []
            batch = args.batch or SHAPES[s][2]
            for _ in range(args.rounds):
                for m in modes:
                    ours[m].append(rust_side(exe, s, args.threads, args.device, d, batch, check, m, args.phases))
                    check = False
                theirs.append(torch_side(s, args.threads, args.device, d, batch, args.phases))
            t = statistics.median(r["img_s_median"] for r in theirs)
            for m in modes:
                o = statistics.median(r["img_s_median"] for r in ours[m])
                p = paired(ours[m], theirs)
                rows.append({"shape": s, "image": SHAPES[s][1], "batch": batch, "threads": args.threads,
                             "parallel": m, "device": args.device, "dtype": d,
                             "wflora_img_s": o, "pytorch_img_s": t, "ratio": o / t, "paired": p,
                             "runs": ours[m] + theirs})
                print(f"{s:>8} {SHAPES[s][1]:>4}px batch {batch:>2} {args.device} {d:>4} ({m}): wflora {o:9.1f} "
                      f"img/s, PyTorch {t:9.1f} img/s, ratio {o / t:5.2f}", flush=True)
                print(f"{'':>8} paired by round: ratios {', '.join(f'{r:.2f}' for r in p['ratios'])}; median "
                      f"{p['median']:.2f}, range {p['min']:.2f}-{p['max']:.2f} (a {100 * p['range_coverage']:.1f}% "
                      f"interval for the median ratio); ours faster in {p['wins']} of {len(p['ratios'])} "
                      f"(one-sided sign test p = {p['sign_test_p']:.3f})", flush=True)
            last = ours[modes[-1]][-1]
            if "fwd_ms" in last and "fwd_ms" in theirs[-1]:
                print(f"{'':>8} forward / forward+backward ms: wflora {last['fwd_ms']:.1f} / "
                      f"{last['fwd_bwd_ms']:.1f}, PyTorch {theirs[-1]['fwd_ms']:.1f} / "
                      f"{theirs[-1]['fwd_bwd_ms']:.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()

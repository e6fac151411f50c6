#!/usr/bin/env python3
"""The PAPO objective the way a PyTorch user writes it, timed on the same shapes as `npm run bench`.

    python bench/torch_peer.py [--full] [--no-save] [--json-lines] [--impl eager|compile|both] [--n N]

Eager PyTorch and torch.compile, forward + backward of papoLoss with the options `npm run bench` uses (preset
papo-g: PPO clip 0.2/0.3 with dual clip 3, k3 reference KL 0.01, k3 perception KL maximised with 0.02, no entropy
terms, token-mean) and forward only (log-probs and entropy of one path), vocab 32000 and 151936, float32 and
bfloat16, logits on the GPU (no host transfers), timed with CUDA events. Writes the JSON lines of bench/report.ts to
bench/results/gpu.jsonl, with the roofline (a device-to-device copy of the same minimal bytes) measured in the same
run, so the tables line up. Needs a CUDA GPU and PyTorch; nothing from the Node package. --json-lines also prints
each row as "JSON {...}" the moment it is measured (scripts/gpu-check.sh keeps the rows of a run its time limit
stopped); --impl times one implementation only (torch.compile's first call of each shape compiles, so a lease runs
it as its own step); --n sets the rows (default 2048, 8192 with --full).

    python bench/torch_peer.py --check FIXTURE.json

checks first that this peer computes the package's objective: FIXTURE (from `node dist/bench/torch-fixture.js`)
holds small inputs with the float64 reference's loss, log-probs and gradients; runs on the CPU too.

    python bench/torch_peer.py --cpu N V THREADS

times eager forward + backward of the same objective on the CPU in float32 with THREADS threads (the CPU row of
bench/targets.ts, which checks the peer first) and prints one JSON line: the median of 9 calls after 2 warm-ups.
"""
import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import time

import torch
import torch.nn.functional as F


def k3(d):
    """verl's low_var_kl: clamp(e^delta - delta - 1, -10, 10), delta = clamp(d, -20, 20)."""
    delta = torch.clamp(d, -20.0, 20.0)
    return torch.clamp(torch.exp(delta) - delta - 1, -10.0, 10.0)


def papo_loss(logits, masked_logits, tokens, adv, old_lp, ref_lp, temperature=1.0, clip_low=0.2, clip_high=0.3,
              clip_dual=3.0, kl_coef=0.01, perception_coef=0.02, entropy_coef=0.0, masked_entropy_coef=0.0):
    """The package's objective (docs/objective.md, preset papo-g by default), written as eager tensor code
    (log_softmax, gather, elementwise terms, token-mean)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    logp_m = F.log_softmax(masked_logits.float() / temperature, dim=-1)
    lp = logp.gather(-1, tokens[:, None]).squeeze(-1)
    a = logp_m.gather(-1, tokens[:, None]).squeeze(-1)
    log_ratio = torch.clamp(lp - old_lp, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    pg = torch.maximum(l1, l2)
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * clip_dual), pg)
    per_token = (pg + kl_coef * k3(ref_lp - lp) - perception_coef * k3(a - lp) + entropy_coef * (-lp)
                 + masked_entropy_coef * (-a))
    with torch.no_grad():  # reported like papoLoss's per-token outputs
        ent = -(logp.exp() * logp).nansum(-1)
    return per_token.mean(), lp.detach(), ent


def fwd_only(logits, tokens):
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens[:, None]).squeeze(-1), -(logp.exp() * logp).nansum(-1)


def time_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times


def check(path):
    """This peer against the package's float64 reference on the fixture's inputs: exit 1 on a mismatch."""
    with open(path) as fh:
        fx = json.load(fh)
    N, V = fx['N'], fx['V']
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    t = lambda k, dt=torch.float32: torch.tensor(fx[k], dtype=dt, device=dev)
    z = t('logits').reshape(N, V).requires_grad_(True)
    zm = t('maskedLogits').reshape(N, V).requires_grad_(True)
    loss, lp, _ = papo_loss(z, zm, t('tokens', torch.int64), t('advantages'), t('oldLogProbs'), t('refLogProbs'))
    loss.backward()
    worst = 0.0
    for name, got, want in [('loss', loss.detach().reshape(1), [fx['loss']]), ('logProbs', lp, fx['logProbs']),
                            ('gradLogits', z.grad.reshape(-1), fx['gradLogits']),
                            ('gradMaskedLogits', zm.grad.reshape(-1), fx['gradMaskedLogits'])]:
        want = torch.tensor(want, dtype=torch.float64)
        err = ((got.double().cpu() - want).abs() / (want.abs() + 1e-6)).max().item()
        print(f"{name}: max relative difference {err:.2e}")
        worst = max(worst, err)
    ok = worst < 1e-4
    print(f"torch peer {'computes' if ok else 'does NOT compute'} the package's objective (worst {worst:.2e}, {dev})")
    return 0 if ok else 1


def cpu_time(n, v, threads, calls=9, warm=2):
    """Eager fwd+bwd on the CPU, float32: autograd allocates the gradients each call, as a PyTorch loop does."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(n, v, generator=g) * 3).requires_grad_(True)
    zm = (torch.randn(n, v, generator=g) * 3).requires_grad_(True)
    tokens = torch.randint(0, v, (n,), generator=g)
    adv = torch.randn(n, generator=g) * 0.5
    old = torch.full((n,), -12.0)
    ref = torch.full((n,), -12.0)
    times = []
    for i in range(warm + calls):
        z.grad = None
        zm.grad = None
        t = time.perf_counter()
        loss, _, _ = papo_loss(z, zm, tokens, adv, old, ref)
        loss.backward()
        if i >= warm:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps(dict(medianMs=times[len(times) // 2], threads=torch.get_num_threads(), torch=torch.__version__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--full', action='store_true')
    ap.add_argument('--no-save', action='store_true')
    ap.add_argument('--check', metavar='FIXTURE')
    ap.add_argument('--cpu', nargs=3, type=int, metavar=('N', 'V', 'THREADS'))
    ap.add_argument('--json-lines', action='store_true')
    ap.add_argument('--impl', choices=('eager', 'compile', 'both'), default='both')
    ap.add_argument('--n', type=int)
    args = ap.parse_args()
    if args.check:
        raise SystemExit(check(args.check))
    if args.cpu:
        return cpu_time(*args.cpu)
    dev = torch.device('cuda')
    N = args.n or (8192 if args.full else 2048)
    vocabs = [4096, 32000, 65536, 151936] if args.full else [151936, 32000]
    reps = 20
    try:
        commit = subprocess.check_output(['git', 'rev-parse', '--short', 'HEAD'], cwd=os.path.dirname(__file__),
                                         stderr=subprocess.DEVNULL).decode().strip()
    except Exception:
        commit = 'unknown'
    machine = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(), commit=commit,
                   host=socket.gethostname(), cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                   cpuIsa='n/a', threads=torch.get_num_threads(), gpu=torch.cuda.get_device_name(0))
    compiled = torch.compile(papo_loss) if args.impl != 'eager' else None
    lines = []
    print(f"| case | dtype | V | backend | N | median ms | GB/s | % roofline |")
    for V in vocabs:
        for dtype in (torch.float32, torch.bfloat16):
            esz = 4 if dtype == torch.float32 else 2
            g = torch.Generator(device=dev).manual_seed(0)
            z = (torch.randn(N, V, device=dev, generator=g) * 3).to(dtype).requires_grad_(True)
            zm = (torch.randn(N, V, device=dev, generator=g) * 3).to(dtype).requires_grad_(True)
            tokens = torch.randint(0, V, (N,), device=dev, generator=g)
            adv = torch.randn(N, device=dev, generator=g) * 0.5
            old = torch.full((N,), -12.0, device=dev)
            ref = torch.full((N,), -12.0, device=dev)
            for kind in ('fwd', 'fwd+bwd'):
                bytes_ = (2 * N * V * 2 * esz) if kind == 'fwd+bwd' else N * V * esz
                src = torch.empty(bytes_ // 2, dtype=torch.uint8, device=dev)
                dst = torch.empty_like(src)
                copy_ms = time_ms(lambda: dst.copy_(src), reps)[reps // 2]
                roof = bytes_ / copy_ms / 1e6
                del src, dst
                impls = [(name, fn) for name, fn in (('torch-eager', papo_loss), ('torch-compile', compiled))
                         if args.impl in ('both', name[len('torch-'):])]
                for name, fn in impls:
                    if kind == 'fwd':
                        ffn = fwd_only if name == 'torch-eager' else torch.compile(fwd_only)

                        def f(ffn=ffn):
                            with torch.no_grad():
                                ffn(z, tokens)
                    else:
                        def f(fn=fn):
                            z.grad = None
                            zm.grad = None
                            loss, _, _ = fn(z, zm, tokens, adv, old, ref)
                            loss.backward()
                    try:
                        t = time_ms(f, reps)
                    except torch.OutOfMemoryError:
                        print(f"| {kind} | {dtype} | {V} | {name} | {N} | out of memory | | |")
                        torch.cuda.empty_cache()
                        continue
                    med = t[len(t) // 2]
                    gbs = bytes_ / med / 1e6
                    dname = 'float32' if dtype == torch.float32 else 'bfloat16'
                    print(f"| {kind} | {dname} | {V} | {name} | {N} | {med:.2f} | {gbs:.1f} | {100 * gbs / roof:.1f}% |")
                    elems = (2 if kind == 'fwd+bwd' else 1) * N * V
                    lines.append(json.dumps(dict(machine, case=kind, backend=name, N=N, V=V, dtype=dname, medianMs=med,
                                                 minMs=t[0], maxMs=t[-1], rme=None, samples=len(t),
                                                 melemPerS=elems / med / 1e3, gbPerS=gbs, rooflineGbPerS=roof,
                                                 rooflineFraction=gbs / roof)))
                    if args.json_lines:
                        print('JSON ' + lines[-1], flush=True)
            del z, zm
            torch.cuda.empty_cache()
    if not args.no_save:
        out = os.path.join(os.path.dirname(__file__), 'results', 'gpu.jsonl')
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, 'a') as fh:
            fh.write('\n'.join(lines) + '\n')
        print(f"appended {len(lines)} lines to {out}")


if __name__ == '__main__':
    main()

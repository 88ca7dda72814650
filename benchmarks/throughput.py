"""Training-step throughput of ce and ips at equal images per step, and the share of the op and the loss.

An ips step with B images is B/2 same-class pairs: swap (in place), one forward of all B images,
IPSLoss, backward, SGD step. A ce step is one forward of B images, cross-entropy, backward, SGD.
Steps are interleaved (ce, ips, ce, ips, ...) so drift hits both alike; medians are reported.

    python benchmarks/throughput.py                       # CPU: small sizes
    python benchmarks/throughput.py --device cuda --full  # GPU: ResNet-18 @ 32, ResNet-50 @ 224
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import machine

from patchswap import IPSLoss, PatchSwap
from patchswap.models import create_model

CPU_CASES = [("resnet18", 32, 64), ("torchvision:resnet50", 64, 16)]
FULL_CASES = [("resnet18", 32, 256), ("torchvision:resnet50", 224, 128)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_case(name: str, size: int, batch: int, device: torch.device, steps: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = create_model(name, 100).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    half = torch.randint(0, 100, (batch // 2,), device=device)
    y = torch.cat([half, half])
    swap = PatchSwap((2, 2), prob=0.5)
    loss_fn = IPSLoss()
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    amp = precision in ("bf16", "fp16")

    def ce_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def ips_step() -> None:
        xb = x.clone()  # the engine swaps the freshly augmented batch in place; the clone stands for it
        swap.swap_batch(xb, gen, inplace=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits = model(xb)
        n = batch // 2
        loss = loss_fn(logits[:n], logits[n:], half).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def clone_only() -> None:
        x.clone()

    def op_only() -> None:
        swap.swap_batch(x.clone(), gen, inplace=True)

    logits = torch.randn(batch, 100, device=device, requires_grad=True)

    def loss_only() -> None:
        n = batch // 2
        loss_fn(logits[:n], logits[n:], half).loss.backward()

    fns = {"ce": ce_step, "ips": ips_step, "clone": clone_only, "op": op_only, "loss": loss_only}
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for key, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    op = max(med["op"] - med["clone"], 0.0)
    return {
        "case": f"{name} @ {size}x{size}, {batch} images/step",
        "ce_img_s": batch / med["ce"],
        "ips_img_s": batch / med["ips"],
        "ratio": (med["ips"] - med["clone"]) / med["ce"],
        "op_share": op / med["ips"],
        "loss_share": med["loss"] / med["ips"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--full", action="store_true", help="ResNet-18 @ 32 (batch 256) and ResNet-50 @ 224 (batch 128)"
    )
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cases = FULL_CASES if args.full else CPU_CASES
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"# train-step throughput on {device}{gpu}, {args.precision}, channels_last ({machine()})")
    print("| case | ce images/s | ips images/s | ips/ce step time | op share of ips step | loss share |")
    print("|---|---|---|---|---|---|")
    for name, size, batch in cases:
        r = run_case(name, size, batch, device, args.steps, args.precision)
        print(
            f"| {r['case']} | {r['ce_img_s']:,.0f} | {r['ips_img_s']:,.0f} | {r['ratio']:.3f}x "
            f"| {100 * r['op_share']:.2f}% | {100 * r['loss_share']:.2f}% |"
        )


if __name__ == "__main__":
    main()

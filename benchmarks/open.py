"""Memory and time to open big models: one copy of the weights, never two.

Each measurement runs in a fresh subprocess and reports its own peak RSS
(`ru_maxrss`) and wall time:

- bare: the interpreter with torch and gpt_tui's CLI imported, nothing opened;
- trace: `gpt-tui trace --checkpoint ckpt.pt --prompt ...` on a nanoGPT `ckpt.pt` of the
  `--preset` shape (GPT-2 small by default; written once to `--dir`, random weights);
- open: `Session.open` of `--config` (default gpt2-xl) on the CPU with random weights.

The checkpoint's ratio is (trace peak - bare peak) / file size: 1.0 would be exactly one
copy of the weights and nothing else (activations of a short prompt are small).

    python benchmarks/open.py [--preset gpt2] [--config gpt2-xl] [--dir /tmp/gpt-tui-open]
                              [--skip-config]

Last line: `ckpt_peak_over_file=<x> ckpt_trace_s=<t> open_<config>_s=<t> open_<config>_peak_gib=<m>`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
mode, arg, device = sys.argv[1], sys.argv[2], sys.argv[3]
import torch
from gpt_tui.cli import run
if mode == "trace":
    code = run(["trace", "--checkpoint", arg, "--prompt", "Hello, world", "--device", device])
    assert code == 0, code
elif mode == "make":
    from pathlib import Path
    from gpt_tui.io.checkpoints import save_nanogpt_checkpoint
    from gpt_tui.models import build_model, make_config
    model = build_model(make_config(device), "cpu")
    save_nanogpt_checkpoint(Path(arg), model, iter_num=0, best_val_loss=0.0)
elif mode == "open":
    from gpt_tui.engine.core.session import ModelSpec, Session
    opened = time.perf_counter()
    Session.open(ModelSpec(config=arg, device="cpu"))
    start = opened
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}), file=sys.stderr)
"""


def child(mode: str, arg: str = "", device: str = "cpu") -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, arg, device],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


def make_checkpoint(folder: Path, preset: str) -> Path:
    """Written by a child too: a child forked from a big parent inherits its peak RSS."""
    path = folder / preset / "ckpt.pt"
    if not path.exists():
        child("make", str(path.parent), preset)
    return path


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2", help="shape of the checkpoint to trace")
    parser.add_argument("--config", default="gpt2-xl", help="preset to open with random weights")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/gpt-tui-open"))
    parser.add_argument("--skip-config", action="store_true")
    args = parser.parse_args()
    ckpt = make_checkpoint(args.dir, args.preset)
    size = ckpt.stat().st_size
    bare = child("bare")
    trace = child("trace", str(ckpt))
    ratio = (trace["peak_bytes"] - bare["peak_bytes"]) / size
    print(f"bare interpreter (torch + gpt_tui.cli): peak {gib(bare['peak_bytes'])} GiB")
    print(
        f"trace {args.preset} ckpt.pt ({gib(size)} GiB): {trace['seconds']:.1f} s, peak "
        f"{gib(trace['peak_bytes'])} GiB: {ratio:.3f}x the file above the bare interpreter"
    )
    last = f"ckpt_peak_over_file={ratio:.3f} ckpt_trace_s={trace['seconds']:.1f}"
    if not args.skip_config:
        opened = child("open", args.config)
        print(
            f"Session.open --config {args.config} --device cpu: {opened['seconds']:.1f} s, "
            f"peak {gib(opened['peak_bytes'])} GiB"
        )
        last += (
            f" open_{args.config}_s={opened['seconds']:.1f}"
            f" open_{args.config}_peak_gib={gib(opened['peak_bytes'])}"
        )
    print(last)


if __name__ == "__main__":
    main()

"""A fork server for the kill test: imports torch once, then for each `run OUT ARCH STEPS`
line on stdin forks a child that trains (resuming from OUT) and saves every step,
writing `pid P`, `writing FILE` as each torch.save starts and `saved N` after each
complete save, to stdout; the server writes `ended STATUS` when that child is gone.
Forking skips ~2 s of imports per kill."""

from __future__ import annotations

import os
import sys
import traceback

import torch

from gpt_tui.train import TrainSettings, train

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 20


def settings(out: str, arch: str, steps: int) -> TrainSettings:
    ctx = {"block_size": 16} if arch == "nanogpt" else {"sequence_len": 16, "n_kv_head": 1}
    data = os.path.join(os.path.dirname(out), "text.txt")
    with open(data, "w") as f:
        f.write(TEXT)
    return TrainSettings(
        data=data,
        arch=arch,
        overrides=dict(n_layer=2, n_head=2, n_embd=32, **ctx),
        steps=steps,
        out=out,
        batch_size=4,
        eval_interval=1,
        eval_iters=1,
    )


def child(out: str, arch: str, steps: int) -> None:
    torch.set_num_threads(1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the trainer's log lines, till exit

    def say(text: str) -> None:
        os.write(1, (text + "\n").encode())

    say(f"pid {os.getpid()}")
    real_save = torch.save

    def announced_save(obj, f, *args, **kwargs):  # so the test can kill inside a save
        say(f"writing {os.path.basename(str(getattr(f, 'name', f)))}")
        return real_save(obj, f, *args, **kwargs)

    torch.save = announced_save
    train(settings(out, arch, steps), progress=False, on_save=lambda step: say(f"saved {step}"))


def main() -> None:
    # What the trainer imports lazily (dynamo on the first optimizer, rich's progress bar)
    # is imported here once, before any fork; nothing here starts a thread pool.
    import rich.progress  # noqa: F401

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    for line in sys.stdin:
        _, out, arch, steps = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(out, arch, int(steps))
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.write(1, f"ended {status}\n".encode())


if __name__ == "__main__":
    main()

"""Argument parsing: one parser per command, the shared model arguments, and validation of
every number that has a meaningful range. A mistake is one line and exit status 2."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable
from typing import NoReturn

from . import compare_cmds, cost_args, cost_cmds, numerics_cmd, patch_cmds, step_lines
from .app_cmd import cmd_app, cmd_config
from .arg_types import EXIT_USAGE, SEED, Parser, real, whole
from .attach_cmd import add_attach_args, cmd_attach
from .data_cmds import cmd_eval, cmd_train
from .forward_cmds import cmd_generate, cmd_step, cmd_trace
from .init_cmd import cmd_init
from .model_cmds import cmd_configs, cmd_doctor, cmd_samples, cmd_summary
from .serve_cmd import add_serve_args, cmd_serve
from .train_cmds import add_train_step_args, cmd_train_step

__all__ = ["EXIT_USAGE", "Parser", "build_parser", "parse_args", "real", "whole"]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--config", metavar="PRESET", help="build a random-init model from a preset")
    g.add_argument(
        "--arch", choices=["nanogpt", "nanochat"], help="family, where a preset fits both"
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable); nanochat: era=latest for today's gpt.py",
    )
    g.add_argument("--checkpoint", metavar="PATH", help="a nanoGPT / nanochat / GPT-2 checkpoint")
    g.add_argument("--meta", metavar="PATH", help="nanoGPT meta.pkl with the char vocabulary")
    g.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="a local tokenizer: .tiktoken, GPT-2 encoder.json + vocab.bpe, or tokenizer.json",
    )
    g.add_argument("--sample", metavar="NAME", help="a shipped sample model (gpt-tui samples)")
    g.add_argument("--model-file", metavar="PATH.py", help="your own model.py / gpt.py")
    g.add_argument("--model-class", metavar="NAME", help="model class in --model-file")
    g.add_argument("--config-class", metavar="NAME", help="config class in --model-file")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps | meta")
    g.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    g.add_argument("--seed", type=SEED, default=0, help="seed for random init and sampling")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="text to start from")
    p.add_argument("--steps", type=whole(1), default=50, help="tokens to generate (default 50)")
    p.add_argument("--temperature", type=real(0), default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=whole(1), default=None, help="keep the k likeliest tokens")
    p.add_argument(
        "--top-p", type=real(0, above=True, high=1), default=None, help="nucleus, in (0, 1]"
    )
    p.add_argument("--candidates", type=whole(1), default=5, help="candidates shown per step")
    p.add_argument("--json", action="store_true")


# name -> (function, one-line summary, takes the model arguments)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, bool]] = {
    "configs": (cmd_configs, "List the presets with their sizes.", False),
    "summary": (cmd_summary, "Module tree and parameter table of a model.", True),
    "samples": (cmd_samples, "List the shipped sample models.", False),
    "trace": (cmd_trace, "One forward pass: every probe's shape and statistics.", True),
    "step": (cmd_step, "Run a forward pass to a breakpoint and print where it stopped.", True),
    "generate": (cmd_generate, "Generate tokens: the text as drawn, then each step's table.", True),
    "eval": (cmd_eval, "Mean loss of a model over a text file, in context windows.", True),
    "train": (cmd_train, "Train a small char-level model on a text file.", False),
    "train-step": (cmd_train_step, "One training step laid open, and the health of N.", True),
    "doctor": (cmd_doctor, "What gpt-tui detected about a model, one line each.", True),
    "init": (cmd_init, "Each parameter's std and the init rule that set it; train vs eval.", True),
    "config": (cmd_config, "Where the config file is (--path) and what it sets.", False),
    "serve": (cmd_serve, "The inspector in a web browser (textual-serve), on localhost.", True),
    "attach": (cmd_attach, "Look into a training run that called gpt_tui.listen.", False),
    "diff": (compare_cmds.cmd_diff, "Compare two runs probe by probe: where they part ways.", True),
    "patch": (patch_cmds.cmd_patch, "Patch a clean run into a corrupted one, per layer.", True),
    "attribute": (patch_cmds.cmd_attribute, "Which heads and MLPs write a token's logit.", True),
    "numerics": (numerics_cmd.cmd_numerics, "What bf16/fp16/fp8 would do to each module.", True),
    "memory": (cost_cmds.cmd_memory, "Memory of a training step per module; what fits.", True),
    "cost": (cost_cmds.cmd_cost, "FLOPs and time per module, and the MFU.", True),
}


def _commands_epilog() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary, _) in COMMANDS.items()]
    return "commands (gpt-tui COMMAND --help for each):\n" + "\n".join(lines)


def _add_command_args(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments of one command besides the model arguments."""
    if name in compare_cmds.ARGUMENTS:
        compare_cmds.ARGUMENTS[name](p)
    elif name == "summary":
        p.add_argument("--depth", type=whole(0), default=3, help="module tree depth (default 3)")
    elif name == "eval":
        p.add_argument("--data", required=True, help="a UTF-8 text file")
        p.add_argument(
            "--split",
            choices=["val", "train", "all"],
            default="val",
            help="last 10%% (val), first 90%% (train) or all of the text",
        )
    elif name == "trace":
        p.add_argument("--prompt", required=True)
        p.add_argument(
            "--attention", type=whole(0), metavar="LAYER", help="summarise this layer's heads"
        )
        p.add_argument(
            "--leaves", action="store_true", help="also probe every Linear, norm, activation"
        )
    elif name == "step":
        p.add_argument("--prompt", required=True)
        p.add_argument(
            "--break",
            dest="breakpoints",
            action="append",
            default=[],
            metavar="GLOB",
            help="module-path glob to stop at, e.g. 'transformer.h.1.*' (repeatable)",
        )
        p.add_argument(
            "--break-at",
            dest="line_breakpoints",
            action="append",
            default=[],
            metavar="FILE:LINE|FUNCTION",
            help="stop at a line of the model's code, as pdb: 'nanogpt.py:96', "
            "'CausalSelfAttention.forward' (nanoGPT), 'norm' (nanochat), "
            "'nanogpt.py:96 if i == 2' (repeatable)",
        )
        p.add_argument(
            "--eval",
            dest="evals",
            action="append",
            default=[],
            metavar="EXPR",
            help="evaluate EXPR in the paused frame, like pdb's p: it runs your code "
            "(repeatable; needs --break-at)",
        )
        p.add_argument(
            "--show",
            metavar="NAME",
            help="print a 2-D slice of this local's (or expression's) values (needs --break-at)",
        )
        step_lines.add_args(p)  # --tbreak, --ignore, --display, --stops
        p.add_argument(
            "--watch-nan",
            action="store_true",
            help="stop at the first module whose output holds NaN/Inf",
        )
        p.add_argument(
            "--leaves", action="store_true", help="also stop at every Linear, norm and activation"
        )
        p.add_argument(
            "--inject-nan",
            metavar="MODULE",
            help="write a NaN into MODULE's output (to try the watchpoint)",
        )
        p.add_argument(
            "--token",
            type=whole(1),
            metavar="N",
            help="step into the N-th generated token instead of the prompt's forward: its "
            "forward and its sampling, stopping in sample_next unless a breakpoint comes first",
        )
        p.add_argument("--temperature", type=real(0), default=1.0, help="with --token")
        p.add_argument("--top-k", type=whole(1), default=None, help="with --token")
        p.add_argument(
            "--top-p", type=real(0, above=True, high=1), default=None, help="with --token"
        )
    elif name == "numerics":
        cost_args.add_numerics_args(p, whole, real)
        return  # it adds --json
    elif name in ("memory", "cost"):
        cost_args.add_size_args(p, whole, real, fit=name == "memory")
        return  # it adds --json
    elif name == "train-step":
        add_train_step_args(p, whole, real)
        return  # it adds --json
    elif name == "config":
        p.add_argument("--path", action="store_true", help="print only the file's path")
        return  # no --json
    elif name == "serve":
        add_serve_args(p)
        return  # no --json
    elif name == "attach":
        add_attach_args(p)
        return  # it adds --json
    elif name == "generate":
        add_sampling_args(p)
        return  # it adds --json
    elif name == "train":
        p.add_argument("--data", required=True, help="a UTF-8 text file")
        p.add_argument("--arch", choices=["nanogpt", "nanochat"])
        p.add_argument(
            "--config",
            metavar="PRESET",
            default="mini",
            help="the model's shape (default mini: 4 layers, 128 wide, context 128, for a CPU; "
            "small is nanoGPT's shakespeare-char, for a GPU; `gpt-tui configs` lists them)",
        )
        p.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a config field (repeatable); nanochat: era=latest for today's gpt.py",
        )  # fmt: skip
        p.add_argument("--steps", type=whole(1), default=2000)
        p.add_argument("--out", required=True, help="output folder (made if missing)")
        p.add_argument("--seed", type=SEED, default=1337)
        p.add_argument("--device", default="cpu")
        p.add_argument("--batch-size", type=whole(1), default=32)
        p.add_argument("--lr", type=real(0, above=True), default=2e-3)
        p.add_argument("--eval-interval", type=whole(1), default=250)
        return  # prints one line, no --json
    p.add_argument("--json", action="store_true")


def build_parser() -> tuple[Parser, dict[str, Parser]]:
    """The top-level parser (opens the app) and one parser per command."""
    main = Parser(
        prog="gpt-tui",
        usage="gpt-tui [COMMAND] [options]",
        description="A terminal inspector and debugger for nanoGPT and nanochat GPT models.\n"
        "With no command, opens the inspector on the model the options name.",
        epilog=_commands_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(main)
    main.add_argument("--prompt", help="the prompt the app opens on (`p` changes it once open)")
    main.set_defaults(func=cmd_app)
    subs: dict[str, Parser] = {}
    for name, (func, summary, model) in COMMANDS.items():
        p = Parser(prog=f"gpt-tui {name}", description=summary)
        if model:
            add_model_args(p)
        _add_command_args(name, p)
        p.set_defaults(func=func)
        subs[name] = p
    return main, subs


def unknown_command(main: Parser, word: str) -> NoReturn:
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"commands: {', '.join(COMMANDS)}"
    main.error(f"unknown command {word!r} ({hint})")


def parse_args(argv: list[str]) -> argparse.Namespace:
    main, subs = build_parser()
    if argv and argv[0] in subs:
        return subs[argv[0]].parse_args(argv[1:])
    if argv and not argv[0].startswith("-"):
        unknown_command(main, argv[0])
    args, extra = main.parse_known_args(argv)
    if extra:
        late = next((word for word in extra if word in COMMANDS), None)
        if late is not None:
            main.error(f"the command goes first: gpt-tui {late} [options]")
        main.error(f"unrecognized arguments: {' '.join(extra)}")
    return args

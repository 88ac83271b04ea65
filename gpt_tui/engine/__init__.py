"""The UI-free engine: the Debugger and the parts it composes.

    debugger.py   the Debugger: the one object the app and the CLI drive; no part imports it
    core/         what every part uses: the session (a model on a device), the runner (moves,
                  cancellation, snapshot numbers), debug_state (every view type: plain, frozen),
                  stepping (module events), frames and line_* (line events, breakpoints)
    analysis/     probes and stats, attention, lens, interventions, compare, patching,
                  attribution, tensors, numerics, memory and FLOPs
    generation/   sampling laid open, the KV cache, the generation intents
    training/     the training step, its health, watch (one process or many) and its cases

Imports torch and numpy only: never textual, rich or gpt_tui.ui (a test enforces it).
"""

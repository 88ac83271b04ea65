"""Keys that open a text box act before the keys queued behind them.

Textual hands a key to the focused widget, and an app binding acts only when the key has
bubbled back up from there; by then every key that arrived with it (a paste, fast typing
over SSH) has been handed to the same widget and acted as a one-letter key: `e` then
`x.std()` aborted the paused pass (`x`) and started a new one (`s`). So the keys that move
the focus to a text box act here, as they arrive."""

from __future__ import annotations

from textual import events
from textual.app import App
from textual.widgets import Input

# The actions that move the focus into a text box.
OPEN_A_BOX = frozenset({"focus_text_box", "focus_prompt", "filter_tree"})


async def open_box_now(app: App, event: events.Key) -> bool:
    """Run the box-opening action bound to `event`'s key, if any; True if it ran. Not in a
    text box (the key is text there) nor over a modal screen (its own keys rule)."""
    if event.is_forwarded or app.screen is not app.screen_stack[0]:
        return False
    if isinstance(app.focused, Input):
        return False
    for namespace, bindings in app.screen._binding_chain:  # the keymap applied
        if namespace is not app:
            continue
        for binding in bindings.key_to_bindings.get(event.key, ()):
            if binding.action in OPEN_A_BOX and app.check_action(binding.action, ()) is not False:
                await app.run_action(binding.action)
                return True
    return False

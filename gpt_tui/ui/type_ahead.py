"""Keys typed together (a paste, fast typing over SSH) act in the order they were typed.

Keys that open a text box act before the keys queued behind them.

Textual hands a key to the focused widget, and an app binding acts only when the key has
bubbled back up from there; by then every key that arrived with it (a paste, fast typing
over SSH) has been handed to the same widget and acted as a one-letter key: `e` then
`x.std()` aborted the paused pass (`x`) and started a new one (`s`). So the keys that move
the focus into or out of a text box act here, as they arrive. And the keys typed behind an
Enter in a text box wait until its intent has been asked for (`SubmitGate`)."""

from __future__ import annotations

import asyncio

from textual import events
from textual.app import App
from textual.widgets import Input

# The actions that move the focus into a text box, and the one that takes it out (Esc),
# as they run at once (not after the messages already queued).
OPEN_A_BOX = frozenset({"focus_text_box", "focus_prompt", "filter_tree"})
LEAVE_A_BOX = {"focus_tree": "focus_tree(True)"}


async def open_box_now(app: App, event: events.Key) -> bool:
    """Run the focus-moving action bound to `event`'s key, if any; True if it ran. In a
    text box only Esc's (the other keys are text there); never over a modal screen (its
    own keys rule)."""
    if event.is_forwarded or app.screen is not app.screen_stack[0]:
        return False
    in_box = isinstance(app.focused, Input)
    for namespace, bindings in app.screen._binding_chain:  # the keymap applied
        if namespace is not app:
            continue
        for binding in bindings.key_to_bindings.get(event.key, ()):
            action = binding.action
            moves = (action in OPEN_A_BOX and not in_box) or action in LEAVE_A_BOX
            if moves and app.check_action(action, ()) is not False:
                await app.run_action(LEAVE_A_BOX.get(action, action))
                return True
    return False


class SubmitGate:
    """Keys typed behind an Enter in a text box wait until what the Enter asked for has
    reached the app. A box's Enter travels as messages (Input.Submitted, then the pane's
    IntentRequested) that bubble to the app through every widget's own queue, so the
    intent's ticket was taken after those of the one-letter keys queued behind it: with
    `nanogpt.py:96`, Enter, Esc and C arriving together, C's pass ran before the
    breakpoint was set and nothing stopped."""

    ROUNDS = 12  # message hops to wait through at most (a submit takes three or four)

    def __init__(self, app: App) -> None:
        self.app = app
        self.held: list[events.Key] = []
        self.settling = False

    def hold(self, event: events.Key) -> bool:
        """Keep `event` if an Enter before it is still on its way; True if kept."""
        if self.settling:
            self.held.append(event)
        return self.settling

    def submitting(self, event: events.Key) -> None:
        """Called for each key about to be handled: an Enter into a text box closes the
        gate until the messages it starts have all been handled."""
        if event.key == "enter" and isinstance(self.app.focused, Input):
            self.settling = True
            self.app.run_worker(self._settle(), group="type-ahead", exit_on_error=False)

    async def _settle(self) -> None:
        try:
            for _ in range(self.ROUNDS):
                if not await self._one_round():
                    break
        finally:
            self.settling = False
            held, self.held = self.held, []
            for event in held:  # in order, ahead of any key pressed from now on
                self.app.post_message(events.Key(event.key, event.character))

    async def _one_round(self) -> bool:
        """Let every widget handle what is in its queue now; True if messages remain."""
        app = self.app
        pumps = [app, *app.screen.walk_children(with_self=True)]
        done, left = asyncio.Event(), 0

        def handled() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                done.set()

        for pump in pumps:
            if pump.call_later(handled):
                left += 1
        if left:
            try:
                await asyncio.wait_for(done.wait(), timeout=2.0)
            except TimeoutError:  # a widget stuck in a handler: let the keys go on
                return False
        return any(pump.message_queue_size for pump in pumps)

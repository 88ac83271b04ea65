"""The user's config file in the app: its theme and keys applied, its mistakes said once,
a theme picked in the palette kept in it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from textual.app import App
from textual.theme import Theme

from ..config_file import AppConfig, save_setting, theme_warning


class UserSettings:
    def __init__(
        self, config: AppConfig, warnings: Sequence[str] = (), file: Path | None = None
    ) -> None:
        """`file`: where a theme picked later is written (None: not kept)."""
        self.config = config
        self.warnings = list(warnings)
        self.file = file
        self._app: App | None = None

    @property
    def export_dir(self) -> Path:
        return Path(self.config.export_dir or ".").expanduser()

    def apply(self, app: App) -> None:
        """The theme and keys on `app`; each mistake one warning line."""
        self._app = app
        config, file = self.config, self.file or "config.toml"
        warnings = list(self.warnings)
        bad_theme = theme_warning(config.theme, app.available_themes, file)
        if bad_theme:
            warnings.append(bad_theme)
        elif config.theme:
            app.theme = config.theme
        if config.keys:
            app.set_keymap(config.keys)
        for warning in warnings:
            app.notify(warning, title="config", severity="warning", timeout=10)
        app.theme_changed_signal.subscribe(app, self.keep_theme)

    def keep_theme(self, theme: Theme) -> None:
        """Write a newly picked theme to the config file (atomically)."""
        if self.file is None or theme.name == (self.config.theme or ""):
            return
        try:
            save_setting("theme", theme.name, self.file)
        except OSError as err:
            if self._app is not None:
                self._app.notify(f"could not keep the theme in {self.file}: {err}", timeout=6)
            return
        self.config = replace(self.config, theme=theme.name)

"""Settings the member changes on this desktop (no Dear PyGui): appearance (scale, font size;
applied at the next start) and the link-preview switch, which the connector keeps (the desktop
shows its last answer). The Settings dialog renders it."""

from __future__ import annotations


class Settings:
    def __init__(self, scale: float, font_size: int) -> None:
        self.scale = scale
        self.font_size = font_size
        self.previews_enabled: bool | None = None  # the connector's answer; None: not read yet

    def set_appearance(self, scale: float | None = None, font_size: int | None = None) -> str:
        """New appearance values; the toast to show."""
        if scale is not None:
            self.scale = scale
        if font_size is not None:
            self.font_size = font_size
        return "Appearance saved: it applies at the next start."

    def previews_answered(
        self, asked: bool | None, enabled: bool | None, error: str | None
    ) -> tuple[str, bool] | None:
        """The connector answered a read (``asked`` None) or a change of the preview switch:
        the toast to show as (text, is_error), or None for a quiet read."""
        if error is not None or enabled is None:
            if asked is not None:
                return f"Link previews not changed: {error or ''}", True
            return None
        self.previews_enabled = enabled
        if asked is not None:
            return f"Link previews {'on' if enabled else 'off'}.", False
        return None

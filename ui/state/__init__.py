"""The desktop app's state, pure (no Dear PyGui, no asyncio): the view model (``model``: the one
place where events are applied, navigation and the quick switcher, timeline rows), the compact
message store (``store``) and the composer (``composer``)."""

"""Widgets of the browser: the checkpoint tree, the status bar, the details panel."""

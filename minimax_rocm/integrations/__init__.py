"""Integrations: serving engines that call this package's ops (the top layer:
nothing below imports it)."""

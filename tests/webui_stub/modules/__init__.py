"""Stand-in for A1111's `modules` package (see tests/webui_stub/__init__.py)."""

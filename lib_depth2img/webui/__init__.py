"""The WebUI adapter (A1111 v1.10 and Forge): the only package that imports the WebUI's `modules.*`.

    script_impl      what the Depth2img script does per hook (scripts/depth2img.py delegates here)
    host             A1111 or Forge, and how each tells the depth model (Forge has no ldm)
    checkpoint_swap  which checkpoint a job runs on, swapped through the WebUI's override_settings
    conditioning     the depth conditioning that replaces the WebUI's own image conditioning
    depth_service    estimator, cache and the services the panel (ui.panel) and routes (api) call
    infotext_xyz     PNG-info paste and X/Y/Z plot axes
    settings         the Depth2img section of A1111's Settings
    api              the HTTP routes (mounted at app start)
"""

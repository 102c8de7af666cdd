"""The A1111 adapter: the only package that imports the WebUI's `modules.*`.

    script_impl      what the Depth2img script does per hook (scripts/depth2img.py delegates here)
    checkpoint_swap  which checkpoint a job runs on, swapped through A1111's override_settings
    conditioning     the depth conditioning that replaces A1111's native depth step
    depth_service    estimator, cache and the services the panel (ui.panel) and routes (api) call
    infotext_xyz     PNG-info paste and X/Y/Z plot axes
    settings         the Depth2img section of A1111's Settings
    api              the HTTP routes (mounted at app start)
"""

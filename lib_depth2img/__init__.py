"""sd-webui-depth2img: Stable Diffusion 2 depth-to-image for A1111, the command line and a standalone app."""

__version__ = "0.1.0"

"""Stand-in for Stability's `ldm.models.diffusion.ddpm`: only the class names A1111 tests with isinstance."""


class LatentDiffusion:
    """Base of the fake SD models built by `modules.sd_models`."""


class LatentDepth2ImageDiffusion(LatentDiffusion):
    """The depth model's class; A1111's `img2img_image_conditioning` recognises it by isinstance."""

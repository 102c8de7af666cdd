"""A minimal, faithful stand-in for the parts of A1111 v1.10.1 that lib_depth2img.webui uses.

Importing this package puts its folder first on sys.path, so `import modules.processing` and
`import ldm.models.diffusion.ddpm` resolve here. Names, signatures and the call order of
`process_images` follow A1111 v1.10.1 (commit 82a973c0); the bodies are written for the tests:
models are fakes that record what they were given, not networks. No A1111 code is copied.
"""

import os
import sys

STUB_DIR = os.path.dirname(os.path.abspath(__file__))
if STUB_DIR not in sys.path:
    sys.path.insert(0, STUB_DIR)

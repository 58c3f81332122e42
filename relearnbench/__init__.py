"""relearnbench: does a concept erasure in a diffusion model survive an attacker?"""

__version__ = "0.1.0"

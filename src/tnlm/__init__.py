"""tnlm: TransNormerLLM, its baselines, and the tools around them."""

__version__ = "0.1.0"

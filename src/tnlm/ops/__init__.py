"""Pure tensor functions: no nn.Module, no config, no I/O."""

"""SGM-style diffusion modules: one strategy family per file."""

"""DiffusionTransformer backbone and its SAT mixins (official key names)."""

"""3D causal VAE (context parallel) compatible with the official 3d-vae.pt."""

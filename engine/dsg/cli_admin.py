"""Admin commands (health, metrics), registered on the main app."""

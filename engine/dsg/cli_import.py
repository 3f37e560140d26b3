"""Migration commands (import from the original dsg and from snap), registered on the main app."""

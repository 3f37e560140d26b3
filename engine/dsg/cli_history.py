"""History and integrity commands (blame, validate-*, clean), registered on the main app."""

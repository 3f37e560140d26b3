"""Layer 8: the operations behind the commands (init, clone, status, sync, history)."""

"""Layer 1, pure: values and functions with no filesystem access (errors, paths, manifests, the
15 states, plans).
"""

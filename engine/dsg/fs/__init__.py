"""Layer 2: local-disk primitives (durable writes, hashing and descriptor writes, readahead,
writer threads, YAML files, event logs).
"""

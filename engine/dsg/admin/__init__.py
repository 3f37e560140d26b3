"""Layer 9: admin operations (health, alerts, metrics, backup, validation, import, Fabric
tasks).
"""

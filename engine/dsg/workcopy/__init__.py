"""Layer 5: the working copy (project config, scan rules, scan, prescan, the .dsg/ state
directory).
"""

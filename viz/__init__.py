"""The pygame viewer and GIF recorder."""

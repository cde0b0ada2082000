"""Stand-in for the `comfy` package: only the modules this node pack imports."""

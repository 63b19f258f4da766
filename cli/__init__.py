"""The `rkd` command line."""

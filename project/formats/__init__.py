"""Date formats of the admin, per language."""

"""Modal screens: confirm deletion, keep-newest-N, help."""

"""Code shared by several studies (not a study itself)."""

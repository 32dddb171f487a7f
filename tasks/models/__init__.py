"""Small model definitions used by the embedded defaults."""

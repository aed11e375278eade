"""Tables, figures and report sections rendered from stored results only (never recomputed)."""

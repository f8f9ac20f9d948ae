"""``mcdrop bench``: Monte-Carlo-dropout inference measured side by side, in one run, on one machine."""

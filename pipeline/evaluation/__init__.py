"""``mcdrop evaluate``: is the deployed uncertainty trustworthy? Measured through the exported LiteRT graphs."""

"""Check the converted graphs through LiteRT before anything is published: parity and Monte-Carlo statistics
(``checks``), device graphs (``device``), the moments graph (``moments``), quantised variants (``agreement``),
the memory budget of those checks (``budget``), and the figures the manifest records (``fingerprint``,
``timing``)."""

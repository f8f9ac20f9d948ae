"""Check the converted graphs through LiteRT before anything is published: parity with Keras (``parity``),
Monte-Carlo statistics of the in-graph masks (``randomness``), what those share (``common``), device graphs
(``device``), the moments graph (``moments``), quantised variants (``agreement``), the memory budget of the checks
(``budget``), and the figures the manifest records (``fingerprint``, ``timing``)."""

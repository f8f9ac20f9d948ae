"""The steps of one export, in the order ``exporter.export`` runs them: describe the model (``subject``), the server's
graphs (``server``), device graphs (``device``), the moments graph (``moments``), quantised variants
(``quantized``), and the manifest (``manifest``). Each converts, verifies and writes into the staging directory."""

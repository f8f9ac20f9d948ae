"""Rewrite the model's forward pass: with every dropout mask under control (``forward``), as one pass of means and
variances (``moments``), and the server's uncertainty summary as TensorFlow ops (``summary``)."""

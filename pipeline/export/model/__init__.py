"""Describe the Keras model: its dropout sites (``sites``), inputs and outputs as the graphs name them
(``signature``), which sites stay stochastic (``selection``), its cost, verification rows, and loading it with the
user's custom layers. Reads the model; changes nothing."""

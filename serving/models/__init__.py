"""The model store: the typed manifest (the contract with the export), the repository on disk and in memory,
LiteRT graphs and interpreter pools, activation footprints, and the mask scheme the graphs are fed with."""

"""Offline batch scoring with uncertainty (``mcdrop score``): the prediction core over tables, in process or
on a Ray cluster. Needs ``pyarrow`` (``pip install 'mcdrop[score]'``); Ray only for ``--ray``."""

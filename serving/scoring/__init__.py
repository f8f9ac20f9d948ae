"""Offline batch scoring with uncertainty (``mcdrop score``): the server's data plane over tables, in process or
on a Ray cluster. Needs ``pyarrow`` (``pip install 'mcdrop[score]'``); Ray only for ``--ray``."""

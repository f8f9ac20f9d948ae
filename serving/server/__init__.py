"""The server process: settings (flags and ``MCDROP_*``), the ``Server`` that wires repository, data plane,
transports, health and metrics, the ``--workers`` supervisor, logging, CPU discovery and the container probe."""

"""What runs requests inside one server process: the data plane (limits, admission, the server-wide load and
the lone-request rule around the core sampler), metrics, bearer tokens and the incident log."""

"""Code that drives a server from outside, for the demo, the benchmark, the soak command and the tests: a server
child process, measuring helpers, soak loops. The server itself never imports it."""

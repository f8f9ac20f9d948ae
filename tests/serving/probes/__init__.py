"""Outside clients run in their own processes (or venvs) against a server under test: Triton's, KServe's and an
old mcdrop client. Scripts, not tests; kept apart so that a script's folder on ``sys.path`` shadows no package
(``tests/serving/grpc/`` would shadow ``grpc``)."""

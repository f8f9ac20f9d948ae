"""The Open Inference Protocol over REST: the Starlette app, JSON bodies, the one mapping from mcdrop errors to
HTTP status codes, and uvicorn in a thread of the server process."""

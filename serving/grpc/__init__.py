"""The gRPC adapters: the mcdrop.v1 and Open Inference Protocol servicers (thin: convert and delegate), the one
mapping from mcdrop errors to status codes, and bearer-token authentication."""

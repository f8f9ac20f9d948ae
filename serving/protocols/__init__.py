"""What the APIs say, free of any transport: the Open Inference Protocol's facts (metadata, input, outputs,
parameters), the mcdrop.v1 messages to and from the core, tensors on the wire, and every output named once.
No ``grpc`` import here: the gRPC and REST adapters convert their messages with it."""

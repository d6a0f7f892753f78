"""protoc plugin running grpcio-tools' built-in grpc_python generator, for `buf generate`.

grpcio-tools ships the generator inside its embedded protoc rather than as a plugin binary, so this
replays the request through that protoc from a descriptor set; the output is byte-identical to
`python -m grpc_tools.protoc --grpc_python_out`.
"""

import os
import sys
import tempfile
from pathlib import Path

from google.protobuf.compiler import plugin_pb2
from google.protobuf.descriptor_pb2 import FileDescriptorSet
from grpc_tools import protoc

__all__ = ["generate", "main"]

Response = plugin_pb2.CodeGeneratorResponse


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Return the grpc_python output for the files the request asks to generate."""
    response = Response(supported_features=Response.Feature.FEATURE_PROTO3_OPTIONAL)
    with tempfile.TemporaryDirectory() as tmp:
        descriptors, out = Path(tmp, "request.binpb"), Path(tmp, "out")
        descriptors.write_bytes(FileDescriptorSet(file=request.proto_file).SerializeToString())
        out.mkdir()
        args = [f"--descriptor_set_in={descriptors}", f"--grpc_python_out={out}"]
        if request.parameter:
            args.append(f"--grpc_python_opt={request.parameter}")
        if protoc.main(["protoc", *args, *request.file_to_generate]) != 0:
            response.error = "grpc_tools.protoc failed; its messages are on stderr"
            return response
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            name = path.relative_to(out).as_posix()
            response.file.add(name=name, content=path.read_text("utf-8"))
    return response


def main() -> None:
    """Read a CodeGeneratorRequest on stdin and write the CodeGeneratorResponse to stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    # protoc shares this process's stdout, which carries the response: keep its chatter on stderr.
    with os.fdopen(os.dup(1), "wb") as stdout:
        os.dup2(2, 1)
        stdout.write(generate(request).SerializeToString())

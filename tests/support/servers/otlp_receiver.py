"""A real OTLP/HTTP trace receiver for tests, on 127.0.0.1, stdlib only: it accepts POSTs (protobuf
or JSON, gzip or plain), answers 200 as a collector (and Langfuse's `/api/public/otel/v1/traces`)
does, and keeps every request. `spans()` decodes the protobuf bodies with opentelemetry-proto."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.servers._loopback import LoopbackServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # decompressed


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[str]
    resource: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass
class OtlpReceiver(LoopbackServer):
    thread_name = "otlp-receiver"
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    @property
    def url(self) -> str:
        return self.root_url

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def spans(self) -> list[Span]:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for req in self.requests():
            msg = ExportTraceServiceRequest()
            if "json" in req.headers.get("content-type", ""):
                json_format.ParseDict(_hex_ids_to_base64(json.loads(req.body)), msg, ignore_unknown_fields=True)
            else:
                msg.ParseFromString(req.body)
            for rs in msg.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            Span(
                                s.name,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                {a.key: _value(a.value) for a in s.attributes},
                                [e.name for e in s.events],
                                resource,
                            )
                        )
        return out


def _hex_ids_to_base64(obj: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64 bytes."""
    if isinstance(obj, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in _ID_KEYS and isinstance(v, str)
            else _hex_ids_to_base64(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_hex_ids_to_base64(v) for v in obj]
    return obj


_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            with receiver._lock:
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if "json" in (self.headers.get("Content-Type") or ""):
                data, ctype = json.dumps({"partialSuccess": {}}).encode(), "application/json"
            else:
                data, ctype = b"", "application/x-protobuf"  # an empty ExportTraceServiceResponse
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler

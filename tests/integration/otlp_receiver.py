"""A minimal OpenTelemetry collector for tests: OTLP/HTTP with JSON bodies on 127.0.0.1.

POST /v1/traces: the body must be an ExportTraceServiceRequest in OTLP's JSON mapping (ids as
hex, 64-bit integers as strings). It is checked against OpenTelemetry's own message definitions
(the opentelemetry-proto package, strict: an unknown field is an error), then every span is
appended, one JSON object per line, to SPANS_FILE, with its resource's service.name. A body that
does not parse is answered 400 and its error appended to SPANS_FILE.errors.

  otlp_receiver.py PORT SPANS_FILE [--status CODE]

--status CODE answers every request with CODE after reading it (a collector that refuses).
Runs until SIGTERM.
"""
import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

port, spans_file = int(sys.argv[1]), sys.argv[2]
forced = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--status" else 0
ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def hex_ids_to_base64(body):
    """OTLP JSON carries ids as hex; protobuf's JSON parser wants bytes as base64."""
    for rs in body.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for f in ID_FIELDS:
                    if f in span:
                        raw = bytes.fromhex(span[f])  # ValueError: not hex
                        span[f] = base64.b64encode(raw).decode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body=b"{}"):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if forced:
            return self.reply(forced)
        if self.path != "/v1/traces":
            return self.reply(404)
        try:
            if self.headers.get("Content-Type") != "application/json":
                raise ValueError("Content-Type %r" % self.headers.get("Content-Type"))
            body = json.loads(data)
            hex_ids_to_base64(body)
            req = trace_service_pb2.ExportTraceServiceRequest()
            json_format.ParseDict(body, req)  # strict: unknown fields raise
        except Exception as e:  # noqa: BLE001 -- any malformed body is the sender's fault
            with open(spans_file + ".errors", "a") as f:
                f.write("%s: %s\n" % (type(e).__name__, e))
            return self.reply(400)
        with open(spans_file, "a") as f:
            for rs in req.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        attrs = {}
                        for a in s.attributes:
                            v = a.value
                            attrs[a.key] = v.int_value if v.HasField("int_value") else v.string_value
                        f.write(json.dumps({
                            "service": service.get("service.name", ""),
                            "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(), "name": s.name,
                            "kind": s.kind, "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano, "status": s.status.code,
                            "attributes": attrs}) + "\n")
        self.reply(200)


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
